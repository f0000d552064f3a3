using System.Diagnostics;
using Yarp.ReverseProxy.LoadBalancing;
using Yarp.ReverseProxy.Model;

namespace Batching.Samples.Gateway;

/// <summary>
/// Picks the instance with the lowest estimated wait, as each instance itself reports it on every response
/// (<see cref="InstanceLoad.EstimatedWaitMs"/>: fresh on each reply, so no polling lag). Instances within
/// <see cref="GatewayOptions.Tie"/> of the lowest tie; two of those, drawn at random, are compared by expected service
/// time (observed latency × this gateway's requests in flight to it), so an idle cluster still favours its fast instances
/// and no single instance takes a burst alone.
/// </summary>
/// <remarks>YARP's PowerOfTwoChoices and LeastRequests see only the requests this proxy has in flight; the instance's
/// queue also holds other clients' and other gateways' work, and a slow device holds each request longer.</remarks>
internal sealed class LoadAwarePolicy(LoadBook book, GatewayOptions options) : ILoadBalancingPolicy
{
    private readonly double _tieMs = options.Tie.TotalMilliseconds;

    public string Name => GatewayOptions.LoadAware;

    public DestinationState? PickDestination(HttpContext context, ClusterState cluster, IReadOnlyList<DestinationState> availableDestinations)
    {
        int count = availableDestinations.Count;
        if (count == 0)
        {
            return null;
        }

        Span<double> waits = count <= 64 ? stackalloc double[count] : new double[count];
        double lowest = double.MaxValue;
        for (int i = 0; i < count; i++)
        {
            waits[i] = book[availableDestinations[i].DestinationId].EstimatedWaitMs();
            lowest = Math.Min(lowest, waits[i]);
        }

        Span<int> tied = count <= 64 ? stackalloc int[count] : new int[count];
        int ties = 0;
        for (int i = 0; i < count; i++)
        {
            if (waits[i] <= lowest + _tieMs)
            {
                tied[ties++] = i;
            }
        }

        DestinationState chosen;
        if (ties == 1)
        {
            chosen = availableDestinations[tied[0]];
        }
        else
        {
            int first = Random.Shared.Next(ties);
            int second = Random.Shared.Next(ties - 1);
            second += second >= first ? 1 : 0;
            DestinationState a = availableDestinations[tied[first]], b = availableDestinations[tied[second]];
            chosen = Service(a) <= Service(b) ? a : b;
        }

        book[chosen.DestinationId].Picked();
        return chosen;
    }

    private double Service(DestinationState destination) => book[destination.DestinationId].ExpectedServiceMs(destination.ConcurrentRequestCount);
}

/// <summary>The response side of routing: every response's load header into the <see cref="LoadBook"/>, with the
/// attempt's latency (whatever policy picked the instance, so the book and metrics are the same for every policy).</summary>
internal static class LoadRecorder
{
    private static readonly object StartKey = new();

    public static void AttemptStarted(HttpContext context) => context.Items[StartKey] = Stopwatch.GetTimestamp();

    public static void Record(HttpContext context, HttpResponseMessage? response, LoadBook book)
    {
        if (response is null || context.GetReverseProxyFeature().ProxiedDestination is not { } destination)
        {
            return;
        }

        InstanceLoad instance = book[destination.DestinationId];
        if (response.Headers.TryGetValues(LoadReport.HeaderName, out IEnumerable<string>? values) && LoadReport.Parse(values.FirstOrDefault()) is { } report)
        {
            instance.Report(report);
        }

        if (context.Items[StartKey] is long start)
        {
            instance.Latency(Stopwatch.GetElapsedTime(start));
        }
    }
}
