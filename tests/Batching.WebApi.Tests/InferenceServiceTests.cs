using System.Net;
using System.Text.Json;

namespace Batching.WebApi.Tests;

/// <summary>One server for the class: starting one compiles the kernel, which is the slow part.</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    internal RunningServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await RunningServer.StartAsync();

    public async Task DisposeAsync() => await Server.DisposeAsync();
}

/// <summary>The sample as shipped (GPU backend, or its managed CPU path here), on a real socket.</summary>
public sealed class InferenceServiceTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private readonly RunningServer _server = fixture.Server;

    [Fact]
    public async Task A_concurrent_burst_gets_the_reference_outputs_on_both_endpoints()
    {
        const int Batched = 192;
        const int Unbatched = 64;
        var random = new Random(7);
        float[][] inputs = [.. Enumerable.Range(0, Batched + Unbatched).Select(_ => Reference.RandomFeatures(random))];

        const string Completed = "batching_request_outcome=\"completed\"";
        string before = await _server.MetricsAsync();
        HttpResponseMessage[] responses = await Task.WhenAll(inputs.Select((features, i) =>
            _server.InferAsync(features, i < Batched ? "/v1/infer" : "/v1/infer-unbatched"))).WaitAsync(RunningServer.Patience);

        for (int i = 0; i < responses.Length; i++)
        {
            using HttpResponseMessage response = responses[i];
            Reference.AssertClose(Reference.Dense(inputs[i]), await Reference.OutputsAsync(response));
        }

        // Counters are recorded just after callers are released, so poll briefly rather than read once.
        string after = "";
        using var timeout = new CancellationTokenSource(RunningServer.Patience);
        do
        {
            after = await _server.MetricsAsync();
        }
        while (Delta("batching_requests_total", "infer", Completed) + Delta("batching_requests_total", "infer-unbatched", Completed) < Batched + Unbatched
            && !timeout.IsCancellationRequested && await Pause());

        double Delta(string metric, string processor, string? label = null) =>
            (Prometheus.Read(after, metric, processor, label) ?? 0) - (Prometheus.Read(before, metric, processor, label) ?? 0);

        Assert.Equal(Batched, Delta("batching_requests_total", "infer", Completed));
        Assert.Equal(Unbatched, Delta("batching_requests_total", "infer-unbatched", Completed));
        Assert.Equal(Batched, Delta("batching_batch_size_sum", "infer"));
        // One item per handler call on the baseline endpoint: as many batches as requests.
        Assert.Equal(Unbatched, Delta("batching_batch_size_count", "infer-unbatched"));
        Assert.Equal(Unbatched, Delta("batching_batch_size_sum", "infer-unbatched"));
    }

    private static async Task<bool> Pause()
    {
        await Task.Delay(10);
        return true;
    }

    public static TheoryData<string, string, string> BadBodies => new()
    {
        { "{\"features\":[1,2", "Malformed JSON", "Path: $.features" },
        { "not json", "Malformed JSON", "invalid" },
        { "{\"feature\":[1,2]}", "Malformed JSON", "'feature'" },
        { "{\"features\":[1,2,3]}", "Wrong vector width", "exactly 256 numbers; it held 3" },
        { "{\"features\":[]}", "Wrong vector width", "it held 0" },
        { "{\"features\":\"abc\"}", "Malformed JSON", "Path: $.features" },
        { "{}", "Missing features", "'features' array of 256 numbers" },
        { "null", "Missing features", "'features' array" },
        { "", "Empty body", "empty" },
        { "  \n ", "Empty body", "empty" },
    };

    [Theory]
    [MemberData(nameof(BadBodies))]
    public async Task Bad_input_is_a_400_problem_that_names_it(string body, string title, string detailPart)
    {
        foreach (string path in new[] { "/v1/infer", "/v1/infer-unbatched" })
        {
            using HttpResponseMessage response = await _server.Client.PostAsync(path, RunningServer.Json(body));
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Problem problem = await Problem.ReadAsync(response);
            Assert.Equal(400, problem.Status);
            Assert.Equal(title, problem.Title);
            Assert.Contains(detailPart, problem.Detail, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Non_json_content_type_and_oversized_bodies_are_refused()
    {
        using (HttpResponseMessage response = await _server.Client.PostAsync("/v1/infer", new StringContent("{\"features\":[1]}")))
        {
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
            Assert.Contains("application/json", (await Problem.ReadAsync(response)).Detail, StringComparison.Ordinal);
        }

        string huge = "{\"features\":[" + string.Join(",", Enumerable.Repeat("0.125", 20_000)) + "]}";
        using (HttpResponseMessage response = await _server.Client.PostAsync("/v1/infer", RunningServer.Json(huge)))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
            Assert.Equal("Body too large", (await Problem.ReadAsync(response)).Title);
        }

        // Still serving afterwards.
        float[] features = Reference.RandomFeatures(new Random(3));
        using HttpResponseMessage ok = await _server.InferAsync(features);
        Reference.AssertClose(Reference.Dense(features), await Reference.OutputsAsync(ok));
    }

    [Fact]
    public async Task Healthz_reports_both_processors_healthy()
    {
        using HttpResponseMessage response = await _server.Client.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using JsonDocument json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("Healthy", json.RootElement.GetProperty("status").GetString());
        JsonElement check = json.RootElement.GetProperty("checks").GetProperty("batching");
        Assert.Equal("Healthy", check.GetProperty("status").GetString());
        JsonElement data = check.GetProperty("data");
        Assert.StartsWith("Healthy", data.GetProperty("infer").GetString(), StringComparison.Ordinal);
        Assert.StartsWith("Healthy", data.GetProperty("infer-unbatched").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Metrics_expose_the_batching_instruments_in_prometheus_text()
    {
        float[] features = Reference.RandomFeatures(new Random(5));
        using (HttpResponseMessage response = await _server.InferAsync(features))
        {
            Reference.AssertClose(Reference.Dense(features), await Reference.OutputsAsync(response));
        }

        using HttpResponseMessage metrics = await _server.Client.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
        Assert.Equal("text/plain", metrics.Content.Headers.ContentType?.MediaType);
        string text = await metrics.Content.ReadAsStringAsync();
        foreach (string name in new[]
        {
            "batching_requests_total", "batching_batch_size_bucket", "batching_batch_duration_seconds_bucket",
            "batching_queue_wait_seconds_bucket", "batching_queue_depth", "batching_batches_in_flight",
        })
        {
            Assert.NotNull(Prometheus.Read(text, name, "infer"));
        }

        Assert.Contains("# TYPE batching_requests_total counter", text, StringComparison.Ordinal);
        Assert.Contains("http_server_request_duration_seconds", text, StringComparison.Ordinal);
    }
}
