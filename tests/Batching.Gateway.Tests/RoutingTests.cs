using System.Globalization;
using Xunit.Abstractions;

namespace Batching.Gateway.Tests;

/// <summary>The load-aware policy against YARP's RoundRobin and PowerOfTwoChoices, on the same heterogeneous cluster
/// under the same closed-loop load.</summary>
[Collection(ClusterCollection.Name)]
public sealed class RoutingTests(ClusterFixture cluster, ITestOutputHelper output)
{
    private const int Workers = 24;
    private const int Requests = 600;

    [Fact]
    public async Task Load_aware_p99_is_lower_than_RoundRobin_and_PowerOfTwoChoices()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(40));
        var workload = new Workload();
        var p99 = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string policy in ClusterFixture.Policies)
        {
            Uri infer = new(cluster.Gateways[policy].Address, "v1/infer");
            _ = await workload.ClosedLoopAsync(cluster.Client, infer, 8, 64, timeout.Token);
            string before = await cluster.Client.GetStringAsync(new Uri(cluster.Gateways[policy].Address, "metrics"), timeout.Token);
            Sample[] samples = await workload.ClosedLoopAsync(cluster.Client, infer, Workers, Requests, timeout.Token);
            string after = await cluster.Client.GetStringAsync(new Uri(cluster.Gateways[policy].Address, "metrics"), timeout.Token);

            Assert.All(samples, s => Assert.True(s.Outcome == Outcome.Succeeded, $"{policy}: {s.Outcome} {s.Status} {s.Detail}"));
            p99[policy] = Stats.PercentileMs(samples, 99);
            string shares = string.Join(", ", cluster.Instances.Select(i =>
                (Prometheus.Sum(after, "batching_gateway_routed_total", Prometheus.Instance(i.Address))
                    - Prometheus.Sum(before, "batching_gateway_routed_total", Prometheus.Instance(i.Address))).ToString(CultureInfo.InvariantCulture)));
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{policy,-18} p50 {Stats.PercentileMs(samples, 50),7:0.0} ms  p99 {p99[policy],7:0.0} ms  routed (fast, fast, slow): {shares}"));
        }

        Assert.True(p99["LoadAware"] < p99["RoundRobin"], $"LoadAware p99 {p99["LoadAware"]:0.0} ms is not below RoundRobin's {p99["RoundRobin"]:0.0} ms.");
        Assert.True(p99["LoadAware"] < p99["PowerOfTwoChoices"], $"LoadAware p99 {p99["LoadAware"]:0.0} ms is not below PowerOfTwoChoices' {p99["PowerOfTwoChoices"]:0.0} ms.");
    }
}
