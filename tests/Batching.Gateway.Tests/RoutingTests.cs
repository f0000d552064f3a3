using System.Globalization;
using Xunit.Abstractions;

namespace Batching.Gateway.Tests;

/// <summary>The load-aware policy against YARP's RoundRobin and PowerOfTwoChoices, on the same heterogeneous cluster
/// under the same closed-loop load, in interleaved rounds.</summary>
[Collection(ClusterCollection.Name)]
public sealed class RoutingTests(ClusterFixture cluster, ITestOutputHelper output)
{
    private const int Workers = 24;
    private const int Rounds = 3;
    private const int RequestsPerRound = 200;

    [Fact]
    public async Task Load_aware_p99_is_lower_than_RoundRobin_and_PowerOfTwoChoices()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(45));
        var workload = new Workload();
        var samples = ClusterFixture.Policies.ToDictionary(p => p, _ => new List<Sample>(), StringComparer.Ordinal);
        var routed = ClusterFixture.Policies.ToDictionary(p => p, _ => new double[3], StringComparer.Ordinal);
        foreach (string policy in ClusterFixture.Policies)
        {
            _ = await workload.ClosedLoopAsync(cluster.Client, Infer(policy), 8, 64, timeout.Token);
        }

        // Rounds in turn, each policy's order rotating, so a burst of other work on the machine is shared out.
        for (int round = 0; round < Rounds; round++)
        {
            foreach (string policy in ClusterFixture.Policies.Skip(round).Concat(ClusterFixture.Policies.Take(round)))
            {
                string before = await MetricsAsync(policy, timeout.Token);
                samples[policy].AddRange(await workload.ClosedLoopAsync(cluster.Client, Infer(policy), Workers, RequestsPerRound, timeout.Token));
                string after = await MetricsAsync(policy, timeout.Token);
                for (int i = 0; i < 3; i++)
                {
                    string label = Prometheus.Instance(cluster.Instances[i].Address);
                    routed[policy][i] += Prometheus.Sum(after, "batching_gateway_routed_total", label) - Prometheus.Sum(before, "batching_gateway_routed_total", label);
                }
            }
        }

        var p99 = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string policy in ClusterFixture.Policies)
        {
            Assert.All(samples[policy], s => Assert.True(s.Outcome == Outcome.Succeeded, $"{policy}: {s.Outcome} {s.Status} {s.Detail}"));
            p99[policy] = Stats.PercentileMs(samples[policy], 99);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{policy,-18} p50 {Stats.PercentileMs(samples[policy], 50),7:0.0} ms  p99 {p99[policy],7:0.0} ms  routed (fast, fast, slow): {string.Join(", ", routed[policy])}"));
        }

        Assert.True(p99["LoadAware"] < p99["RoundRobin"], $"LoadAware p99 {p99["LoadAware"]:0.0} ms is not below RoundRobin's {p99["RoundRobin"]:0.0} ms.");
        Assert.True(p99["LoadAware"] < p99["PowerOfTwoChoices"], $"LoadAware p99 {p99["LoadAware"]:0.0} ms is not below PowerOfTwoChoices' {p99["PowerOfTwoChoices"]:0.0} ms.");
    }

    private Uri Infer(string policy) => new(cluster.Gateways[policy].Address, "v1/infer");

    private Task<string> MetricsAsync(string policy, CancellationToken cancellationToken) =>
        cluster.Client.GetStringAsync(new Uri(cluster.Gateways[policy].Address, "metrics"), cancellationToken);
}
