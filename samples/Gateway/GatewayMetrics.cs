using System.Diagnostics.Metrics;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Model;

namespace Batching.Samples.Gateway;

/// <summary>
/// The gateway's meter (<see cref="MeterName"/>), on <c>/metrics</c> in Prometheus form:
/// <c>batching_gateway_routed_total</c> (attempts sent, per instance), <c>batching_gateway_retries_total</c> (per reason
/// and failed instance), <c>batching_gateway_failed_total</c> (requests answered with the gateway's own error, per reason),
/// <c>batching_gateway_instances_in_rotation</c>, and per instance <c>batching_gateway_instance_available</c> (1 in
/// rotation, 0 out) and <c>batching_gateway_instance_estimated_wait_seconds</c> (as the gateway last heard it).
/// </summary>
internal sealed class GatewayMetrics
{
    public const string MeterName = "Batching.Gateway";
    public const string InstanceTag = "batching.gateway.instance";
    public const string ReasonTag = "batching.gateway.reason";

    private readonly Counter<long> _routed;
    private readonly Counter<long> _retries;
    private readonly Counter<long> _failed;
    private readonly LoadBook _book;

    public GatewayMetrics(IMeterFactory meters, LoadBook book, IServiceProvider services)
    {
        _book = book;
        Meter meter = meters.Create(MeterName);
        _routed = meter.CreateCounter<long>("batching.gateway.routed", "{request}", "Attempts sent to an instance (a retried request counts twice).");
        _retries = meter.CreateCounter<long>("batching.gateway.retries", "{request}", "Requests sent again after their instance refused them (503) or could not be reached.");
        _failed = meter.CreateCounter<long>("batching.gateway.failed", "{request}", "Requests answered with the gateway's own error: no instance could take them.");

        // The proxy state is resolved on first observation: it is built after the meter's owner.
        Lazy<IProxyStateLookup> proxy = new(services.GetRequiredService<IProxyStateLookup>);
        meter.CreateObservableGauge("batching.gateway.instances.in_rotation", () => Cluster(proxy)?.DestinationsState.AvailableDestinations.Count ?? 0,
            "{instance}", "Instances the gateway routes to now (healthy, or not yet probed).");
        meter.CreateObservableGauge("batching.gateway.instance.available", () => PerInstance(proxy, (d, c) => c.DestinationsState.AvailableDestinations.Contains(d) ? 1 : 0),
            "{instance}", "1 while the instance is in rotation, 0 while it is out.");
        meter.CreateObservableGauge("batching.gateway.instance.estimated_wait", () => PerInstance(proxy, (d, _) => book[d].EstimatedWaitMs() / 1000),
            "s", "The instance's estimated wait as the gateway last heard it, plus the requests sent since.");
    }

    public void Routed(DestinationState? destination)
    {
        if (destination is not null)
        {
            _routed.Add(1, new KeyValuePair<string, object?>(InstanceTag, _book[destination].Address));
        }
    }

    public void Retried(string reason, DestinationState failed) =>
        _retries.Add(1, new(ReasonTag, reason), new(InstanceTag, _book[failed].Address));

    public void Failed(string reason) => _failed.Add(1, new KeyValuePair<string, object?>(ReasonTag, reason));

    private static ClusterState? Cluster(Lazy<IProxyStateLookup> proxy) => proxy.Value.TryGetCluster(GatewayApp.ClusterId, out ClusterState? cluster) ? cluster : null;

    private IEnumerable<Measurement<T>> PerInstance<T>(Lazy<IProxyStateLookup> proxy, Func<DestinationState, ClusterState, T> value)
        where T : struct
    {
        if (Cluster(proxy) is not { } cluster)
        {
            return [];
        }

        return [.. cluster.DestinationsState.AllDestinations.Select(d =>
            new Measurement<T>(value(d, cluster), new KeyValuePair<string, object?>(InstanceTag, _book[d].Address)))];
    }
}
