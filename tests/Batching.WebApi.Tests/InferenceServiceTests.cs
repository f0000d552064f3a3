using System.Net;
using System.Text.Json;
using Batching.Samples.WebApi;
using Microsoft.Extensions.DependencyInjection;

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
        { Body(Zeros, ",\"priority\":2"), "Priority out of range", "'priority' must be from 0 (the most urgent) to 1; it was 2" },
        { Body(Zeros, ",\"priority\":-1"), "Priority out of range", "'priority' must be from 0 (the most urgent) to 1; it was -1" },
        { Body(Zeros, ",\"priority\":1.5"), "Malformed JSON", "Path: $.priority" },
        { Body(Zeros, ",\"timeout_ms\":-1"), "Timeout out of range", "'timeout_ms' must be from 0 to 3600000 milliseconds; it was -1" },
        { Body(Zeros, ",\"timeout_ms\":1e12"), "Timeout out of range", "'timeout_ms' must be from 0" },
        { Body(Zeros, ",\"timeout_ms\":\"soon\""), "Malformed JSON", "Path: $.timeout_ms" },
        { Body("[\"one\"]"), "Malformed JSON", "Path: $.features" },
        { Body($"[{Zeros},[1,2,3]]"), "Wrong vector width", "'features[1]' must hold exactly 256 numbers; it held 3" },
        { Body("[[]]"), "Wrong vector width", "'features[0]' must hold exactly 256 numbers; it held 0" },
        { Body($"[{Zeros},[0,1e39,{string.Join(",", Enumerable.Repeat("0", 254))}]]"), "Value out of range", "features[1][1] is not a finite" },
        { Body($"[{string.Join(",", Enumerable.Repeat(Zeros, InferEndpoint.MaxVectors + 1))}]"), "Too many vectors",
            $"'features' may hold at most {InferEndpoint.MaxVectors} vectors in one request; it held {InferEndpoint.MaxVectors + 1}" },
        { Body($"[{Zeros},5]"), "Malformed JSON", "Path: $.features" },
        { Body("[1,[2]]"), "Malformed JSON", "Path: $.features" },
        { Body("[[[1]]]"), "Malformed JSON", "Path: $.features" },
    };

    /// <summary>A valid vector: 256 zeros.</summary>
    private static readonly string Zeros = $"[{string.Join(",", Enumerable.Repeat("0", 256))}]";

    private static string Body(string features, string more = "") => $"{{\"features\":{features}{more}}}";

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

        string huge = "{\"features\":[" + string.Join(",", Enumerable.Repeat("0.125", (InferEndpoint.MaxBodyBytes / 6) + 1)) + "]}";
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

    [Theory]
    [InlineData("/v1/infer")]
    [InlineData("/v1/infer-unbatched")]
    public async Task An_array_of_vectors_gets_its_outputs_in_order_equal_to_one_vector_at_a_time(string path)
    {
        // 64 vectors: one full batch on /v1/infer; 64 batches of one on /v1/infer-unbatched, so the call is split.
        var random = new Random(17);
        float[][] vectors = [.. Enumerable.Range(0, InferEndpoint.MaxVectors).Select(_ => Reference.RandomFeatures(random))];
        float[][] many;
        using (HttpResponseMessage response = await _server.PostAsync(new { features = vectors }, path))
        {
            many = await Reference.ManyOutputsAsync(response);
        }

        Assert.Equal(vectors.Length, many.Length);
        for (int i = 0; i < vectors.Length; i++)
        {
            Reference.AssertClose(Reference.Dense(vectors[i]), many[i]);
        }

        foreach (int i in new[] { 0, 1, 31, vectors.Length - 1 })
        {
            using HttpResponseMessage one = await _server.InferAsync(vectors[i], path);
            Assert.Equal(await Reference.OutputsAsync(one), many[i]);
        }

        // An array of one vector is still an array: the response is an array of one output.
        using HttpResponseMessage single = await _server.PostAsync(new { features = new[] { vectors[5] } }, path);
        Assert.Equal(many[5], Assert.Single(await Reference.ManyOutputsAsync(single)));
    }

    [Theory]
    [InlineData(0, 10_000.0)]
    [InlineData(1, 10_000.0)]
    [InlineData(1, null)]
    [InlineData(null, 2_500.5)]
    public async Task Priority_and_timeout_ms_are_accepted_for_one_vector_and_for_several(int? priority, double? timeoutMs)
    {
        var random = new Random(19);
        float[] one = Reference.RandomFeatures(random);
        float[][] several = [Reference.RandomFeatures(random), Reference.RandomFeatures(random), Reference.RandomFeatures(random)];
        foreach (string path in new[] { "/v1/infer", "/v1/infer-unbatched" })
        {
            using (HttpResponseMessage response = await _server.PostAsync(new Dictionary<string, object?>
            {
                ["features"] = one, ["priority"] = priority, ["timeout_ms"] = timeoutMs,
            }, path))
            {
                Reference.AssertClose(Reference.Dense(one), await Reference.OutputsAsync(response));
            }

            using (HttpResponseMessage response = await _server.PostAsync(new Dictionary<string, object?>
            {
                ["features"] = several, ["priority"] = priority, ["timeout_ms"] = timeoutMs,
            }, path))
            {
                float[][] outputs = await Reference.ManyOutputsAsync(response);
                Assert.Equal(several.Length, outputs.Length);
                for (int i = 0; i < several.Length; i++)
                {
                    Reference.AssertClose(Reference.Dense(several[i]), outputs[i]);
                }
            }
        }
    }

    [Fact]
    public async Task Numbers_written_as_strings_are_read_as_before_in_both_shapes()
    {
        // The web defaults read "0.5" as 0.5; the one-or-many features field keeps that.
        float[] features = Reference.RandomFeatures(new Random(43));
        string[] quoted = [.. features.Select(f => f.ToString("R", System.Globalization.CultureInfo.InvariantCulture))];
        using (HttpResponseMessage one = await _server.PostAsync(new { features = quoted }))
        {
            Reference.AssertClose(Reference.Dense(features), await Reference.OutputsAsync(one));
        }

        using HttpResponseMessage many = await _server.PostAsync(new { features = new[] { quoted, quoted } });
        float[][] outputs = await Reference.ManyOutputsAsync(many);
        Assert.Equal(2, outputs.Length);
        Reference.AssertClose(Reference.Dense(features), outputs[1]);
    }

    [Fact]
    public async Task Every_response_of_both_endpoints_carries_the_load_header()
    {
        float[] features = Reference.RandomFeatures(new Random(23));
        foreach ((string path, IBatchProcessor<ReadOnlyMemory<float>, float[]> processor) in new[]
        {
            ("/v1/infer", _server.Services.GetRequiredService<IBatchProcessor<ReadOnlyMemory<float>, float[]>>()),
            ("/v1/infer-unbatched", _server.Services.GetRequiredKeyedService<IBatchProcessor<ReadOnlyMemory<float>, float[]>>(InferenceApp.UnbatchedKey)),
        })
        {
            ProcessorLoad load = processor.GetLoad();
            Assert.Equal(InferenceApp.PriorityLevels, load.PriorityLevels);
            using HttpResponseMessage ok = await _server.InferAsync(features, path);
            using HttpResponseMessage many = await _server.PostAsync(new { features = new[] { features, features } }, path);
            using HttpResponseMessage bad = await _server.Client.PostAsync(path, RunningServer.Json("{\"features\":[1]}"));
            using HttpResponseMessage malformed = await _server.Client.PostAsync(path, RunningServer.Json("{"));
            using HttpResponseMessage unsupported = await _server.Client.PostAsync(path, new StringContent("{}"));
            Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.BadRequest, HttpStatusCode.BadRequest, HttpStatusCode.UnsupportedMediaType],
                new[] { ok, many, bad, malformed, unsupported }.Select(r => r.StatusCode));
            foreach (HttpResponseMessage response in new[] { ok, many, bad, malformed, unsupported })
            {
                Dictionary<string, double> report = LoadReport.Read(response);
                // Nothing else runs on this server now: the queue is empty whatever the response.
                Assert.Equal(0, report["queued"]);
                Assert.Equal(0, report["waiting"]);
                Assert.Equal(load.QueueCapacity, report["capacity"]);
                Assert.Equal(load.Slots, report["slots"]);
                Assert.InRange(report["in_flight"], 0, load.Slots);
                Assert.True(report["estimated_wait_ms"] >= 0);
                Assert.Equal(0, report["queued_p0"] + report["queued_p1"]);
                Assert.True(report.ContainsKey("estimated_wait_ms_p1"));
                Assert.False(report.ContainsKey("queued_p2"));
            }
        }
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
