using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Batching;

/// <summary>Something that reports the health of one batching component: a processor, or a device behind one.</summary>
public interface IBatchingHealthContributor
{
    /// <summary>The component's name, used as the key of its entry in the health report's data.</summary>
    string Name { get; }

    /// <summary>Reports the component's health now. Must be quick and must not throw.</summary>
    /// <returns>Healthy, Degraded (serving, but near a limit or with lost capacity) or Unhealthy (cannot serve).</returns>
    HealthCheckResult CheckHealth();
}

/// <summary>
/// A health check over every processor registered with <c>AddBatching()</c> (and every other
/// <see cref="IBatchingHealthContributor"/> in the container): Degraded when a queue is near capacity or a device is
/// unhealthy, Unhealthy when a component has no execution path left. Register it with
/// <c>services.AddHealthChecks().AddCheck&lt;BatchingHealthCheck&gt;("batching")</c>; a load balancer or readiness
/// probe reading it routes traffic to another instance when this one is saturated.
/// </summary>
public sealed class BatchingHealthCheck : IHealthCheck
{
    private readonly IBatchingHealthContributor[] _contributors;

    /// <summary>Creates the check over <paramref name="contributors"/>.</summary>
    /// <param name="contributors">The components to report on.</param>
    public BatchingHealthCheck(IEnumerable<IBatchingHealthContributor> contributors)
    {
        ArgumentNullException.ThrowIfNull(contributors);
        // A processor replaced by another implementation resolves to null here; it has nothing to report.
        _contributors = [.. contributors.Where(c => c is not null)];
    }

    /// <summary>Reports the worst status among the components, with each component's description in the data.</summary>
    /// <param name="context">The health check context.</param>
    /// <param name="cancellationToken">Unused; the check does not block.</param>
    /// <returns>The combined result.</returns>
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        HealthStatus worst = HealthStatus.Healthy;
        var data = new Dictionary<string, object>(StringComparer.Ordinal);
        var problems = new List<string>();
        foreach (IBatchingHealthContributor contributor in _contributors)
        {
            HealthCheckResult result;
            try
            {
                result = contributor.CheckHealth();
            }
            catch (Exception ex)
            {
                result = HealthCheckResult.Unhealthy($"'{contributor.Name}' failed to report its health.", ex);
            }

            data[contributor.Name] = $"{result.Status}: {result.Description}";
            if (result.Status < worst)
            {
                worst = result.Status;
            }

            if (result.Status != HealthStatus.Healthy)
            {
                problems.Add(result.Description ?? contributor.Name);
            }
        }

        string description = problems.Count == 0 ? $"{_contributors.Length} batching component(s) healthy." : string.Join(" ", problems);
        return Task.FromResult(new HealthCheckResult(worst, description, data: data));
    }
}
