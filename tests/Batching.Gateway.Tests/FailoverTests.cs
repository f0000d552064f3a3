using System.Text.Json;
using Xunit.Abstractions;

namespace Batching.Gateway.Tests;

/// <summary>An instance killed under load, then restarted: every request is accounted for; the gateway stops routing to
/// it, retries what it refused or dropped on another, and routes to it again once it is back.</summary>
[Collection(ClusterCollection.Name)]
public sealed class FailoverTests(ClusterFixture cluster, ITestOutputHelper output)
{
    [Fact]
    public async Task A_killed_instance_loses_no_request_leaves_rotation_and_rejoins_after_restart()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(45));
        SampleProcess gateway = cluster.Gateways["LoadAware"];
        Uri infer = new(gateway.Address, "v1/infer"), metrics = new(gateway.Address, "metrics");
        const int victim = 1;
        string label = Prometheus.Instance(cluster.Instances[victim].Address);

        using var stop = new CancellationTokenSource();
        var started = new TaskCompletionSource();
        Task<Sample[]> load = new Workload(seed: 5).ClosedLoopUntilAsync(cluster.Client, infer, 16, stop.Token, timeout.Token,
            done => { if (done >= 300) { started.TrySetResult(); } });
        try
        {
            await started.Task.WaitAsync(timeout.Token);
            Assert.True(Prometheus.Sum(await cluster.Client.GetStringAsync(metrics, timeout.Token), "batching_gateway_routed_total", label) > 0,
                "The victim took no traffic before the kill; the test would show nothing.");

            cluster.Instances[victim].Kill();

            // The first failure takes it out (passive), the next probe keeps it out (active); from then on it gets nothing.
            await Task.Delay(700, timeout.Token);
            double routedAfterKill = Prometheus.Sum(await cluster.Client.GetStringAsync(metrics, timeout.Token), "batching_gateway_routed_total", label);
            await Task.Delay(1500, timeout.Token);
            double routedWhileDown = Prometheus.Sum(await cluster.Client.GetStringAsync(metrics, timeout.Token), "batching_gateway_routed_total", label);
            Assert.Equal(routedAfterKill, routedWhileDown);
            Assert.Contains("out (", await HealthAsync(cluster.Client, gateway, cluster.Instances[victim].Address, timeout.Token), StringComparison.Ordinal);

            await cluster.RestartAsync(victim);
            while (Prometheus.Sum(await cluster.Client.GetStringAsync(metrics, timeout.Token), "batching_gateway_routed_total", label) == routedWhileDown)
            {
                await Task.Delay(100, timeout.Token);
            }

            output.WriteLine($"Rejoined: {await HealthAsync(cluster.Client, gateway, cluster.Instances[victim].Address, timeout.Token)}.");
        }
        finally
        {
            await stop.CancelAsync();
        }

        Sample[] samples = await load;
        string final = await cluster.Client.GetStringAsync(metrics, timeout.Token);
        int succeeded = samples.Count(s => s.Outcome == Outcome.Succeeded), failed = samples.Count(s => s.Outcome == Outcome.ClearError);
        int wrong = samples.Count(s => s.Outcome == Outcome.Wrong), lost = samples.Count(s => s.Outcome == Outcome.Lost);
        double retried = Prometheus.Sum(final, "batching_gateway_retries_total", label);
        output.WriteLine($"sent {samples.Length}, succeeded {succeeded}, retried {retried}, failed {failed}, wrong {wrong}, lost {lost}");
        foreach (Sample error in samples.Where(s => s.Outcome != Outcome.Succeeded).Take(5))
        {
            output.WriteLine($"  {error.Outcome} {error.Status}: {error.Detail}");
        }

        Assert.True(retried > 0, "No request was retried: the kill hit nothing in flight, so failover was not exercised.");
        Assert.Equal(0, lost);
        Assert.Equal(0, wrong);

        // A request can only fail if its response had begun on the killed instance (then it cannot be retried); the sample
        // writes each small response at once, so none should.
        Assert.Equal(0, failed);
    }

    /// <summary>What the gateway's /healthz says of <paramref name="instance"/>: "in rotation" or "out (...)".</summary>
    internal static async Task<string> HealthAsync(HttpClient client, SampleProcess gateway, Uri instance, CancellationToken cancellationToken)
    {
        // 200 (Healthy, Degraded) or 503 (Unhealthy): the body says which instance is where either way.
        using HttpResponseMessage response = await client.GetAsync(new Uri(gateway.Address, "healthz"), cancellationToken);
        using JsonDocument json = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken));
        return json.RootElement.GetProperty("instances").GetProperty(instance.ToString()).GetString() ?? "";
    }
}
