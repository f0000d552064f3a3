using Batching.Samples.Gateway;
using Microsoft.Extensions.Configuration;

namespace Batching.Gateway.Tests;

/// <summary>The gateway's settings and the load it reads: bad input fails at start, naming the key.</summary>
public sealed class OptionsTests
{
    [Fact]
    public void Defaults_are_the_documented_ones()
    {
        GatewayOptions options = Read(("Instances:0", "http://127.0.0.1:5081"));
        Assert.Equal(GatewayOptions.LoadAware, options.Policy);
        Assert.Equal(TimeSpan.FromSeconds(1), options.HealthInterval);
        Assert.Equal(TimeSpan.FromSeconds(1), options.HealthTimeout);
        Assert.Equal(TimeSpan.FromSeconds(5), options.Reactivation);
        Assert.Equal(TimeSpan.FromMilliseconds(500), options.LoadStale);
        Assert.Equal(TimeSpan.FromMilliseconds(1), options.Tie);
        Assert.Equal(4 << 20, options.MaxBodyBytes);
        Assert.False(options.ResolveDns);
        Assert.Equal(TimeSpan.FromSeconds(5), options.DnsRefresh);
    }

    [Theory]
    [InlineData("Instances:0", "127.0.0.1:5081", "Gateway:Instances:0")]
    [InlineData("Instances:0", "http://127.0.0.1:5081/v1", "Gateway:Instances:0")]
    [InlineData("Instances:x", "http://127.0.0.1:5081", "Gateway:Instances:x")]
    [InlineData("Policy", "Fastest", "Gateway:Policy")]
    [InlineData("HealthIntervalMs", "0", "Gateway:HealthIntervalMs")]
    [InlineData("TieMs", "soon", "Gateway:TieMs")]
    [InlineData("ResolveDns", "yes", "Gateway:ResolveDns")]
    public void A_bad_value_fails_naming_its_key(string key, string value, string named)
    {
        ArgumentException error = Assert.Throws<ArgumentException>(() => Read(("Instances:0", "http://127.0.0.1:5081"), (key, value)));
        Assert.Contains(named, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void No_instances_or_a_repeated_one_is_refused()
    {
        Assert.Contains("Gateway:Instances is empty", Assert.Throws<ArgumentException>(() => Read()).Message, StringComparison.Ordinal);
        Assert.Contains("repeats", Assert.Throws<ArgumentException>(() => Read(("Instances:0", "http://127.0.0.1:5081"), ("Instances:1", "http://127.0.0.1:5081/"))).Message,
            StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(null, "http://127.0.0.1:5090")]
    [InlineData("6000", "http://127.0.0.1:6000")]
    public void The_gateway_listens_on_loopback_only(string? port, string url) => Assert.Equal(url, GatewayApp.LoopbackUrl(port));

    [Fact]
    public void A_bad_port_is_refused() => Assert.Contains("--port", Assert.Throws<ArgumentException>(() => GatewayApp.LoopbackUrl("99999")).Message, StringComparison.Ordinal);

    [Fact]
    public void The_load_header_is_read_and_unknown_members_are_skipped()
    {
        LoadReport? report = LoadReport.Parse("queued=12, waiting=0, in_flight=1, slots=2, capacity=1024, estimated_wait_ms=3.25, queued_p0=10, future=?1");
        Assert.Equal(new LoadReport(3.25, 12, 1024, 2), report);
        Assert.Null(LoadReport.Parse("queued=12"));
        Assert.Null(LoadReport.Parse("estimated_wait_ms=soon"));
        Assert.Null(LoadReport.Parse(null));
    }

    [Fact]
    public void The_poll_reads_the_infer_processors_wait_and_queue_from_metrics()
    {
        const string exposition = """
            batching_queue_estimated_wait_seconds{batching_processor="infer"} 0.012
            batching_queue_depth{batching_processor="infer",batching_priority="0"} 5
            batching_queue_depth{batching_processor="infer",batching_priority="1"} 2
            batching_queue_depth{batching_processor="infer-unbatched",batching_priority="0"} 40
            """;
        LoadReport? report = LoadPoller.FromMetrics(exposition, new LoadReport(99, 99, 1024, 2));
        Assert.Equal(new LoadReport(12, 7, 1024, 2), report);
        Assert.Null(LoadPoller.FromMetrics("batching_queue_depth{batching_processor=\"infer\"} 5", default));
    }

    private static GatewayOptions Read(params (string Key, string Value)[] settings) =>
        GatewayOptions.Read(new ConfigurationBuilder().AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>("Gateway:" + s.Key, s.Value))).Build().GetSection("Gateway"));
}
