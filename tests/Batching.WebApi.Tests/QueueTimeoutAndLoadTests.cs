using System.Net;
using Microsoft.Extensions.DependencyInjection;

namespace Batching.WebApi.Tests;

/// <summary>
/// Queue timeouts (<c>timeout_ms</c>) and the <c>X-Batching-Load</c> header over a model whose first batch holds the
/// only slot until the test opens its gate: what is queued, and for how long, is known instead of raced.
/// </summary>
public sealed class QueueTimeoutAndLoadTests
{
    private const string Expired = "batching_request_outcome=\"expired\"";

    [Fact]
    public async Task A_vector_whose_timeout_expires_in_the_queue_gets_504_and_never_reaches_the_model()
    {
        var model = new GatedModel();
        await using RunningServer server = await model.StartServerAsync("gated-timeout", maxBatchSize: 8, priorityLevels: 2);
        var random = new Random(29);
        float[] first = Reference.RandomFeatures(random);
        Task<HttpResponseMessage> running = await model.HoldSlotAsync(server, first);

        float[] late = Reference.Marked(random);
        // The gate stays shut until the answer is in: the item can only have left the queue by expiring.
        using (HttpResponseMessage response = await server.PostAsync(new { features = late, priority = 1, timeout_ms = 50 }).WaitAsync(RunningServer.Patience))
        {
            Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
            Problem problem = await Problem.ReadAsync(response);
            Assert.Equal("Inference timed out", problem.Title);
            Assert.Contains("RequestOptions.Timeout", problem.Detail, StringComparison.Ordinal);
            Dictionary<string, double> load = LoadReport.Read(response);
            Assert.Equal(0, load["queued"]);
            Assert.Equal(1, load["in_flight"]);
        }

        await server.WaitForMetricAsync("batching_requests_total", "gated-timeout", 1, Expired);
        model.Open();
        using (HttpResponseMessage response = await running.WaitAsync(RunningServer.Patience))
        {
            Reference.AssertClose(Reference.Dense(first), await Reference.OutputsAsync(response));
        }

        Assert.Equal([1], model.BatchSizes);
        Assert.DoesNotContain(model.Seen, row => row[0] == Reference.MarkValue);
    }

    [Fact]
    public async Task Vectors_that_all_expire_in_the_queue_get_504()
    {
        var model = new GatedModel();
        await using RunningServer server = await model.StartServerAsync("gated-timeout-many", maxBatchSize: 8);
        var random = new Random(31);
        Task<HttpResponseMessage> running = await model.HoldSlotAsync(server, Reference.RandomFeatures(random));

        float[][] vectors = [Reference.RandomFeatures(random), Reference.RandomFeatures(random), Reference.RandomFeatures(random)];
        using (HttpResponseMessage response = await server.PostAsync(new { features = vectors, timeout_ms = 50 }).WaitAsync(RunningServer.Patience))
        {
            Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
            Problem problem = await Problem.ReadAsync(response);
            Assert.Equal("Inference timed out", problem.Title);
            Assert.Contains("RequestOptions.Timeout", problem.Detail, StringComparison.Ordinal);
            Assert.Equal(0, LoadReport.Read(response)["queued"]);
        }

        model.Open();
        using (HttpResponseMessage response = await running.WaitAsync(RunningServer.Patience))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        Assert.Equal([1], model.BatchSizes);
    }

    [Fact]
    public async Task Vectors_that_expire_behind_their_own_first_batch_fail_the_request_with_504_naming_them()
    {
        var model = new GatedModel();
        await using RunningServer server = await model.StartServerAsync("gated-timeout-tail", maxBatchSize: 8, queueCapacity: 16);
        var random = new Random(37);
        float[][] vectors = [.. Enumerable.Range(0, 10).Select(_ => Reference.RandomFeatures(random))];

        // Eight go at once into the batch that holds the only slot; the last two wait behind it and expire.
        Task<HttpResponseMessage> call = server.PostAsync(new { features = vectors, timeout_ms = 100 });
        await model.Entered.Task.WaitAsync(RunningServer.Patience);
        await server.WaitForMetricAsync("batching_queue_depth", "gated-timeout-tail", 0);
        Assert.False(call.IsCompleted);
        model.Open();

        using HttpResponseMessage response = await call.WaitAsync(RunningServer.Patience);
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        Problem problem = await Problem.ReadAsync(response);
        Assert.Equal("Inference timed out", problem.Title);
        Assert.StartsWith("features[8..9] (2 of 10 vectors) timed out", problem.Detail, StringComparison.Ordinal);
        Assert.Contains("RequestOptions.Timeout", problem.Detail, StringComparison.Ordinal);
        LoadReport.Read(response);
        Assert.Equal([8], model.BatchSizes);
    }

    [Fact]
    public async Task The_load_header_reports_the_queue_per_level_on_success_and_error_responses()
    {
        const int Capacity = 8;
        var model = new GatedModel();
        await using RunningServer server = await model.StartServerAsync("gated-load", maxBatchSize: Capacity, priorityLevels: 2);
        var processor = server.Services.GetRequiredService<IBatchProcessor<ReadOnlyMemory<float>, float[]>>();
        var random = new Random(41);
        Task<HttpResponseMessage> running = await model.HoldSlotAsync(server, Reference.RandomFeatures(random));

        // Three bulk vectors in one request, two urgent ones in two: five queued behind the running batch.
        float[][] bulk = [Reference.RandomFeatures(random), Reference.RandomFeatures(random), Reference.RandomFeatures(random)];
        float[][] urgent = [Reference.RandomFeatures(random), Reference.RandomFeatures(random)];
        var pending = new List<Task<HttpResponseMessage>> { server.PostAsync(new { features = bulk, priority = 1 }) };
        pending.AddRange(urgent.Select(f => server.PostAsync(new { features = f, priority = 0 })));
        await server.WaitForMetricAsync("batching_queue_depth", "gated-load", 2, Level(0));
        await server.WaitForMetricAsync("batching_queue_depth", "gated-load", 3, Level(1));

        using (HttpResponseMessage bad = await server.Client.PostAsync("/v1/infer", RunningServer.Json("{\"features\":[1]}")))
        {
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
            Dictionary<string, double> load = LoadReport.Read(bad);
            Assert.Equal(5, load["queued"]);
            Assert.Equal(2, load["queued_p0"]);
            Assert.Equal(3, load["queued_p1"]);
            Assert.Equal(0, load["waiting"]);
            Assert.Equal(1, load["in_flight"]);
            Assert.Equal(1, load["slots"]);
            Assert.Equal(Capacity, load["capacity"]);
            Assert.Equal(processor.GetLoad().QueuedItems, load["queued"]);
        }

        // Four vectors do not fit in the three places left: the whole request is refused, none of it queued.
        float[][] four = [.. Enumerable.Range(0, 4).Select(_ => Reference.RandomFeatures(random))];
        using (HttpResponseMessage rejected = await server.PostAsync(new { features = four }))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, rejected.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(1), rejected.Headers.RetryAfter?.Delta);
            Assert.Equal("Queue full", (await Problem.ReadAsync(rejected)).Title);
            Assert.Equal(5, LoadReport.Read(rejected)["queued"]);
        }

        float[][] fill = [.. Enumerable.Range(0, 3).Select(_ => Reference.RandomFeatures(random))];
        pending.Add(server.PostAsync(new { features = fill, priority = 1 }));
        await server.WaitForMetricAsync("batching_queue_depth", "gated-load", Capacity - 2, Level(1));
        using (HttpResponseMessage full = await server.InferAsync(Reference.RandomFeatures(random)))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, full.StatusCode);
            Dictionary<string, double> load = LoadReport.Read(full);
            Assert.Equal(Capacity, load["queued"]);
            Assert.Equal(Capacity, load["capacity"]);
        }

        model.Open();
        foreach (Task<HttpResponseMessage> request in pending.Prepend(running))
        {
            using HttpResponseMessage response = await request.WaitAsync(RunningServer.Patience);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.InRange(LoadReport.Read(response)["queued"], 0, Capacity);
        }

        using (HttpResponseMessage idle = await server.InferAsync(Reference.RandomFeatures(random)))
        {
            Assert.Equal(HttpStatusCode.OK, idle.StatusCode);
            Assert.Equal(0, LoadReport.Read(idle)["queued"]);
        }

        // The eight queued behind the first batch went as one batch (bulk and urgent share it by weight).
        Assert.Equal([1, Capacity, 1], model.BatchSizes);
    }

    /// <summary>The label of one priority level's sample of <c>batching_queue_depth</c> (one sample per level).</summary>
    private static string Level(int priority) => $"batching_priority=\"{priority}\"";
}
