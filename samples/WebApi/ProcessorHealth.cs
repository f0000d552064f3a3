using Batching.Ilgpu;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Batching.Samples.WebApi;

/// <summary>
/// Reports one processor to <see cref="BatchingHealthCheck"/>. Processors from <c>AddProcessor</c> report themselves;
/// those from <c>AddGpuRowProcessor</c> do not (yet), so for them this reads the device diagnostics instead.
/// </summary>
internal sealed class ProcessorHealth(string name, object processor) : IBatchingHealthContributor
{
    public string Name => name;

    public HealthCheckResult CheckHealth()
    {
        if (processor is IBatchingHealthContributor own)
        {
            return own.CheckHealth();
        }

        if (processor is not IGpuDiagnostics gpu)
        {
            return HealthCheckResult.Healthy($"'{name}' is serving.");
        }

        IReadOnlyList<GpuDeviceStatus> devices = gpu.GetDevices();
        string summary = string.Join("; ", devices);
        if (!devices.Any(d => d.IsHealthy))
        {
            return HealthCheckResult.Unhealthy($"'{name}' has no healthy device left: {summary}");
        }

        if (devices.Any(d => !d.IsHealthy))
        {
            return HealthCheckResult.Degraded($"'{name}' lost a device: {summary}");
        }

        return HealthCheckResult.Healthy($"'{name}': {summary}");
    }
}
