using System.Net;

namespace Batching.WebApi.Tests;

/// <summary>
/// The sample's endpoint over a model whose batches wait on a gate the test opens, so a full queue and a
/// disconnect in the queue happen at a known moment instead of under a race.
/// </summary>
public sealed class BackpressureAndCancellationTests
{
    private const int Capacity = 8;

    [Fact]
    public async Task A_full_queue_in_reject_mode_answers_503_with_retry_after_and_queued_items_go_as_one_batch()
    {
        var model = new GatedModel();
        await using RunningServer server = await StartAsync("gated-reject", model);
        var random = new Random(11);

        float[] first = Reference.RandomFeatures(random);
        Task<HttpResponseMessage> running = await model.HoldSlotAsync(server, first);

        float[][] queued = [.. Enumerable.Range(0, Capacity).Select(_ => Reference.RandomFeatures(random))];
        Task<HttpResponseMessage>[] waiting = [.. queued.Select(f => server.InferAsync(f))];
        await server.WaitForMetricAsync("batching_queue_depth", "gated-reject", Capacity);

        using (HttpResponseMessage rejected = await server.InferAsync(Reference.RandomFeatures(random)).WaitAsync(RunningServer.Patience))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, rejected.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(1), rejected.Headers.RetryAfter?.Delta);
            Problem problem = await Problem.ReadAsync(rejected);
            Assert.Equal("Queue full", problem.Title);
            Assert.Contains("QueueCapacity", problem.Detail, StringComparison.Ordinal);
        }

        model.Open();
        using (HttpResponseMessage response = await running.WaitAsync(RunningServer.Patience))
        {
            Reference.AssertClose(Reference.Dense(first), await Reference.OutputsAsync(response));
        }

        for (int i = 0; i < Capacity; i++)
        {
            using HttpResponseMessage response = await waiting[i].WaitAsync(RunningServer.Patience);
            Reference.AssertClose(Reference.Dense(queued[i]), await Reference.OutputsAsync(response));
        }

        // The eight that queued behind the first batch were coalesced into one handler call.
        Assert.Equal([1, Capacity], model.BatchSizes);
        await server.WaitForMetricAsync("batching_requests_total", "gated-reject", 1, "batching_request_outcome=\"rejected\"");
    }

    [Fact]
    public async Task A_client_that_disconnects_while_queued_is_dropped_from_its_batch()
    {
        var model = new GatedModel();
        await using RunningServer server = await StartAsync("gated-cancel", model);
        var random = new Random(13);

        float[] first = Reference.RandomFeatures(random);
        Task<HttpResponseMessage> running = await model.HoldSlotAsync(server, first);

        float[] abandoned = Reference.Marked(random);
        using var disconnect = new CancellationTokenSource();
        Task<HttpResponseMessage> gone = server.InferAsync(abandoned, cancellationToken: disconnect.Token);
        await server.WaitForMetricAsync("batching_queue_depth", "gated-cancel", 1);

        await disconnect.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => gone.WaitAsync(RunningServer.Patience));
        // The server saw the disconnect through HttpContext.RequestAborted and took the item out of the queue.
        await server.WaitForMetricAsync("batching_requests_total", "gated-cancel", 1, "batching_request_outcome=\"cancelled\"");
        await server.WaitForMetricAsync("batching_queue_depth", "gated-cancel", 0);

        float[] later = Reference.RandomFeatures(random);
        Task<HttpResponseMessage> next = server.InferAsync(later);
        await server.WaitForMetricAsync("batching_queue_depth", "gated-cancel", 1);
        model.Open();

        using (HttpResponseMessage response = await running.WaitAsync(RunningServer.Patience))
        {
            Reference.AssertClose(Reference.Dense(first), await Reference.OutputsAsync(response));
        }

        using (HttpResponseMessage response = await next.WaitAsync(RunningServer.Patience))
        {
            Reference.AssertClose(Reference.Dense(later), await Reference.OutputsAsync(response));
        }

        Assert.Equal([1, 1], model.BatchSizes);
        Assert.DoesNotContain(model.Seen, row => row[0] == Reference.MarkValue);
    }

    private static Task<RunningServer> StartAsync(string name, GatedModel model) => model.StartServerAsync(name, Capacity);
}
