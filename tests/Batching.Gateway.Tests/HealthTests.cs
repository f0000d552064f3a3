using Xunit.Abstractions;

namespace Batching.Gateway.Tests;

/// <summary>An instance whose queue is near full reports Degraded on /healthz; the gateway takes it out of rotation until
/// it reports Healthy again.</summary>
[Collection(ClusterCollection.Name)]
public sealed class HealthTests(ClusterFixture cluster, ITestOutputHelper output)
{
    // One item per batch, one batch at a time, 20 ms each: 40 callers keep the 40-item queue at 39 (Degraded from 36).
    private const int QueueCapacity = 40;

    [Fact]
    public async Task A_degraded_instance_leaves_rotation_and_returns_when_its_queue_drains()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(40));
        using SampleProcess small = SampleProcess.Start("small instance", SampleProcess.WebApiDll, SampleProcess.FreePort(),
            "--Batching:QueueCapacity", "40", "--Batching:MaxBatchSize", "1", "--Batching:MaxConcurrentBatches", "1", "--Inference:BatchDelayMs", "20");
        await small.WaitReadyAsync(cluster.Client, ClusterFixture.Patience);
        SampleProcess fast = cluster.Instances[0];

        // RoundRobin, so only health (not load) keeps requests off the degraded instance.
        using SampleProcess gateway = SampleProcess.Start("gateway (RoundRobin)", SampleProcess.GatewayDll, SampleProcess.FreePort(),
            ClusterShape.GatewayArgs("RoundRobin", fast.Address, small.Address));
        await gateway.WaitReadyAsync(cluster.Client, ClusterFixture.Patience);
        Uri infer = new(gateway.Address, "v1/infer"), metrics = new(gateway.Address, "metrics");
        var workload = new Workload(seed: 7);

        using var stop = new CancellationTokenSource();
        Task<Sample[]> fill = workload.ClosedLoopUntilAsync(cluster.Client, new Uri(small.Address, "v1/infer"), QueueCapacity, stop.Token, timeout.Token);
        try
        {
            await WaitForAsync(() => FailoverTests.HealthAsync(cluster.Client, gateway, small.Address, timeout.Token), s => s.StartsWith("out (", StringComparison.Ordinal), timeout.Token);
            output.WriteLine($"Full: {await FailoverTests.HealthAsync(cluster.Client, gateway, small.Address, timeout.Token)}");
            double before = Prometheus.Sum(await cluster.Client.GetStringAsync(metrics, timeout.Token), "batching_gateway_routed_total", Prometheus.Instance(small.Address));
            Sample[] meanwhile = await workload.ClosedLoopAsync(cluster.Client, infer, 2, 20, timeout.Token);
            string during = await cluster.Client.GetStringAsync(metrics, timeout.Token);
            Assert.All(meanwhile, s => Assert.Equal(Outcome.Succeeded, s.Outcome));
            Assert.Equal(before, Prometheus.Sum(during, "batching_gateway_routed_total", Prometheus.Instance(small.Address)));
        }
        finally
        {
            await stop.CancelAsync();
        }

        Assert.All(await fill, s => Assert.Equal(Outcome.Succeeded, s.Outcome));
        await WaitForAsync(() => FailoverTests.HealthAsync(cluster.Client, gateway, small.Address, timeout.Token), s => s == "in rotation", timeout.Token);
        double back = Prometheus.Sum(await cluster.Client.GetStringAsync(metrics, timeout.Token), "batching_gateway_routed_total", Prometheus.Instance(small.Address));
        Assert.All(await workload.ClosedLoopAsync(cluster.Client, infer, 1, 4, timeout.Token), s => Assert.Equal(Outcome.Succeeded, s.Outcome));
        Assert.True(Prometheus.Sum(await cluster.Client.GetStringAsync(metrics, timeout.Token), "batching_gateway_routed_total", Prometheus.Instance(small.Address)) > back,
            "Back in rotation, the instance got none of four round-robin requests.");
    }

    private static async Task WaitForAsync(Func<Task<string>> read, Func<string, bool> done, CancellationToken cancellationToken)
    {
        while (!done(await read()))
        {
            await Task.Delay(50, cancellationToken);
        }
    }
}
