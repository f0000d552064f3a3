using System.Diagnostics;
using Yarp.ReverseProxy.LoadBalancing;
using Yarp.ReverseProxy.Model;

namespace Batching.Samples.Gateway;

/// <summary>
/// Picks the instance that would answer soonest: the estimated wait each instance itself reports on every response
/// (fresh on each reply, so no polling lag) plus its measured service time (<see cref="InstanceLoad.ExpectedCompletionMs"/>).
/// Instances within <see cref="GatewayOptions.Tie"/> (or 10%) of the best tie; two of those, drawn at random, are
/// compared by expected service time (observed latency × this gateway's requests in flight to it), so no single
/// instance takes a burst alone between two reports.
/// </summary>
/// <remarks>YARP's PowerOfTwoChoices and LeastRequests see only the requests this proxy has in flight; the instance's
/// queue also holds other clients' and other gateways' work, and a slow device holds each request longer.</remarks>
internal sealed class LoadAwarePolicy(LoadBook book, GatewayOptions options) : ILoadBalancingPolicy
{
    // Scores this close to the best are noise (service times are moving averages): treat them as ties.
    private const double RelativeTie = 0.1;

    private readonly double _tieMs = options.Tie.TotalMilliseconds;
    private readonly TimeSpan _stale = options.LoadStale;

    public string Name => GatewayOptions.LoadAware;

    public DestinationState? PickDestination(HttpContext context, ClusterState cluster, IReadOnlyList<DestinationState> availableDestinations)
    {
        int count = availableDestinations.Count;
        if (count == 0)
        {
            return null;
        }

        // An instance that answered nothing for LoadStale gets one request, so a stale estimate gets corrected; when the
        // estimate was right, that costs one request per LoadStale.
        for (int i = 0; i < count; i++)
        {
            if (book[availableDestinations[i]].TryExplore(_stale))
            {
                return Chosen(context, availableDestinations[i]);
            }
        }

        Span<double> waits = count <= 64 ? stackalloc double[count] : new double[count];
        double lowest = double.MaxValue;
        for (int i = 0; i < count; i++)
        {
            waits[i] = book[availableDestinations[i]].ExpectedCompletionMs();
            lowest = Math.Min(lowest, waits[i]);
        }

        Span<int> tied = count <= 64 ? stackalloc int[count] : new int[count];
        int ties = 0;
        double band = lowest + Math.Max(_tieMs, lowest * RelativeTie);
        for (int i = 0; i < count; i++)
        {
            if (waits[i] <= band)
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

        return Chosen(context, chosen);
    }

    private DestinationState Chosen(HttpContext context, DestinationState chosen)
    {
        InstanceLoad load = book[chosen];
        LoadRecorder.Picked(context, load.EstimatedWaitMs());
        load.Picked();
        return chosen;
    }

    private double Service(DestinationState destination) => book[destination].ExpectedServiceMs(destination.ConcurrentRequestCount);
}

/// <summary>The response side of routing: every response's load header into the <see cref="LoadBook"/>, with the
/// attempt's latency (whatever policy picked the instance, so the book and metrics are the same for every policy).</summary>
internal static class LoadRecorder
{
    private static readonly object StartKey = new();
    private static readonly object WaitKey = new();

    public static void AttemptStarted(HttpContext context)
    {
        context.Items[StartKey] = Stopwatch.GetTimestamp();
        context.Items.Remove(WaitKey);
    }

    /// <summary>The load-aware policy's pick: the wait it expected, so the response can tell the service time apart.</summary>
    public static void Picked(HttpContext context, double waitMs) => context.Items[WaitKey] = waitMs;

    public static void Record(HttpContext context, HttpResponseMessage? response, LoadBook book)
    {
        if (response is null || context.GetReverseProxyFeature().ProxiedDestination is not { } destination)
        {
            return;
        }

        InstanceLoad instance = book[destination];
        if (response.Headers.TryGetValues(LoadReport.HeaderName, out IEnumerable<string>? values) && LoadReport.Parse(values.FirstOrDefault()) is { } report)
        {
            instance.Report(report);
        }

        if (context.Items[StartKey] is long start)
        {
            instance.Latency(Stopwatch.GetElapsedTime(start), context.Items[WaitKey] as double?);
        }
    }
}
