using System.Globalization;
using Batching.Samples.WebApi;
using Microsoft.Extensions.Configuration;

namespace Batching.WebApi.Tests;

/// <summary>Inference:SlowdownFactor and Inference:BatchDelayMs: a slower device inside the batch, so its time shows in
/// the processor's own batch duration (and so in its load), with the same answers.</summary>
public sealed class SlowDeviceTests
{
    [Fact]
    public async Task A_slowdown_factor_multiplies_the_batch_time_and_keeps_the_answers()
    {
        await using RunningServer server = await RunningServer.StartAsync(null, "--Inference:SlowdownFactor", "4", "--Inference:BatchDelayMs", "25");
        var random = new Random(3);
        float[] features = Reference.RandomFeatures(random);
        using HttpResponseMessage response = await server.InferAsync(features);
        Reference.AssertClose(Reference.Dense(features), await Reference.OutputsAsync(response));

        // The handler sleeps until the batch took 4 x (its device time + 25 ms): at least 100 ms, whatever the machine.
        await server.WaitForMetricAsync("batching_batch_duration_seconds_count", InferenceApp.BatchedName, 1);
        double seconds = Prometheus.Read(await server.MetricsAsync(), "batching_batch_duration_seconds_sum", InferenceApp.BatchedName)!.Value;
        Assert.True(seconds >= 0.100, $"The slowed batch took {seconds.ToString(CultureInfo.InvariantCulture)} s; 4 x 25 ms is the least it may take.");

        // The real device processor ran the batch.
        Assert.Equal(1, Prometheus.Read(await server.MetricsAsync(), "batching_batch_duration_seconds_count", SlowDevice.DeviceKey));
    }

    [Fact]
    public async Task Without_the_settings_there_is_no_extra_processor()
    {
        await using RunningServer server = await RunningServer.StartAsync();
        using HttpResponseMessage response = await server.InferAsync(Reference.RandomFeatures(new Random(4)));
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.DoesNotContain($"batching_processor=\"{SlowDevice.DeviceKey}\"", await server.MetricsAsync(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("SlowdownFactor", "0.5", "from 1 to 1000")]
    [InlineData("SlowdownFactor", "fast", "must be a number")]
    [InlineData("SlowdownFactor", "NaN", "must be a number")]
    [InlineData("BatchDelayMs", "-1", "from 0 to 60000")]
    [InlineData("BatchDelayMs", "1e9", "from 0 to 60000")]
    public void Bad_values_are_refused_naming_the_key(string key, string value, string rule)
    {
        IConfiguration configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { [$"Inference:{key}"] = value }).Build();
        ArgumentException error = Assert.Throws<ArgumentException>(() => SlowDevice.Read(configuration));
        Assert.Contains($"Inference:{key}", error.Message, StringComparison.Ordinal);
        Assert.Contains(rule, error.Message, StringComparison.Ordinal);
    }
}
