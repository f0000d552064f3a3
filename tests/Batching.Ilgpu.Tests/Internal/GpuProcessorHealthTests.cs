using System.Diagnostics.Metrics;
using Batching.Ilgpu.Internal;
using ILGPU.Runtime.Cuda;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Batching.Ilgpu.Tests.Internal;

public class GpuProcessorHealthTests
{
    private static IGpuBatchProcessor<float, float> Build(string name, FakeDevice[] gpus, FakeDevice? fallback) =>
        GpuProcessorBuilder.Build(
            new ItemProgram<float, float, Twice>(default, rejectNonFinite: false), new GpuOptions { MaxRetries = 1 },
            new BatchingOptions { Name = name, MaxBatchSize = 4, MaxDelay = TimeSpan.Zero }, null, null,
            (_, _, _) => (gpus, fallback));

    private static HealthCheckResult Health(IGpuBatchProcessor<float, float> processor) =>
        Assert.IsAssignableFrom<IBatchingHealthContributor>(processor).CheckHealth();

    [Fact]
    public async Task Health_degrades_as_devices_are_quarantined_and_fails_when_no_path_is_left()
    {
        var a = new FakeDevice("a") { FailOn = _ => new CudaException("CUDA_ERROR_ASSERT") };
        var b = new FakeDevice("b");
        await using var processor = Build("health", [a, b], fallback: null);
        Assert.Equal(HealthStatus.Healthy, Health(processor).Status);

        Assert.Equal(2f, await processor.ProcessAsync(1));
        HealthCheckResult degraded = Health(processor);
        Assert.Equal(HealthStatus.Degraded, degraded.Status);
        Assert.Contains("lost 1 device(s): a", degraded.Description, StringComparison.Ordinal);
        Assert.Contains("remaining devices", degraded.Description, StringComparison.Ordinal);

        b.FailOn = _ => new CudaException("CUDA_ERROR_ILLEGAL_ADDRESS");
        await Assert.ThrowsAnyAsync<Exception>(() => processor.ProcessAsync(2).AsTask());
        HealthCheckResult unhealthy = Health(processor);
        Assert.Equal(HealthStatus.Unhealthy, unhealthy.Status);
        Assert.Contains("no execution path left", unhealthy.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Running_on_the_cpu_fallback_is_reported_as_degraded()
    {
        var a = new FakeDevice("a") { FailOn = _ => new CudaException("CUDA_ERROR_ASSERT") };
        var cpu = new FakeDevice("cpu", 4) { Kind = GpuDeviceKind.ManagedCpu };
        await using var processor = Build("fallback", [a], cpu);

        Assert.Equal(6f, await processor.ProcessAsync(3));
        HealthCheckResult result = Health(processor);
        Assert.Equal(HealthStatus.Degraded, result.Status);
        Assert.Contains("managed CPU fallback", result.Description, StringComparison.Ordinal);
        Assert.Contains("device:a", result.Data.Keys);
    }

    [Fact]
    public async Task Device_health_and_load_are_published_as_gauges()
    {
        string name = $"gauges-{Guid.NewGuid():N}";
        var measurements = new List<(string Instrument, string Device, int Value)>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == BatchingTelemetry.MeterName && instrument.Name.StartsWith("batching.device.", StringComparison.Ordinal))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) =>
        {
            var all = tags.ToArray().ToDictionary(t => t.Key, t => t.Value);
            if (Equals(all[BatchingTelemetry.ProcessorTag], name))
            {
                measurements.Add((instrument.Name, (string)all["batching.device"]!, value));
            }
        });
        listener.Start();
        var a = new FakeDevice("a") { FailOn = _ => new CudaException("CUDA_ERROR_ASSERT") };
        var b = new FakeDevice("b");
        await using var processor = Build(name, [a, b], fallback: null);
        await processor.ProcessAsync(1);

        listener.RecordObservableInstruments();

        Assert.Contains(("batching.device.healthy", "a", 0), measurements);
        Assert.Contains(("batching.device.healthy", "b", 1), measurements);
        Assert.Contains(("batching.device.in_flight", "b", 0), measurements);
    }
}
