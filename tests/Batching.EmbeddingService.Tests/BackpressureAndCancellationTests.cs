using System.Net;
using System.Text.Json;

namespace Batching.EmbeddingService.Tests;

/// <summary>A full queue and a disconnect in the queue, made to happen at a known moment by holding the model.</summary>
public sealed class BackpressureAndCancellationTests
{
    private const int Capacity = 4;

    [Fact]
    public async Task A_full_queue_answers_503_with_retry_after_and_the_queued_requests_then_run_as_one_batch()
    {
        await using RunningServer server = await StartAsync();
        Task<HttpResponseMessage> running = await HoldAsync(server);
        Task<HttpResponseMessage>[] queued = [.. Enumerable.Range(0, Capacity).Select(i => server.EmbedAsync($"queued request {i}"))];
        await server.WaitForMetricAsync("batching_queue_depth", Capacity);

        using (HttpResponseMessage rejected = await server.EmbedAsync("one too many").WaitAsync(RunningServer.Patience))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, rejected.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(1), rejected.Headers.RetryAfter?.Delta);
            Assert.Equal("Queue full", (await Problem.ReadAsync(rejected)).Title);
        }

        server.Gate.Open();
        foreach (Task<HttpResponseMessage> request in queued.Prepend(running))
        {
            using HttpResponseMessage response = await request.WaitAsync(RunningServer.Patience);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        Assert.Equal([1, Capacity], server.Gate.Calls.Select(c => c.Length));
    }

    [Fact]
    public async Task A_client_that_disconnects_while_queued_is_dropped_from_its_batch()
    {
        await using RunningServer server = await StartAsync();
        Task<HttpResponseMessage> running = await HoldAsync(server);
        using var disconnect = new CancellationTokenSource();
        Task<HttpResponseMessage> gone = server.EmbedAsync(new[] { "abandoned one", "abandoned two" }, disconnect.Token);
        Task<HttpResponseMessage> kept = server.EmbedAsync("kept");
        await server.WaitForMetricAsync("batching_queue_depth", 3);

        await disconnect.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => gone.WaitAsync(RunningServer.Patience));
        // The server saw the disconnect through HttpContext.RequestAborted and took both values out of the queue.
        await server.WaitForMetricAsync("batching_queue_depth", 1);
        server.Gate.Open();

        using (HttpResponseMessage response = await running.WaitAsync(RunningServer.Patience))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        using (HttpResponseMessage response = await kept.WaitAsync(RunningServer.Patience))
        {
            using JsonDocument body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Single(body.RootElement.GetProperty("data").EnumerateArray());
        }

        Assert.Equal(["kept"], server.Gate.Calls.Last());
        Assert.DoesNotContain(server.Gate.Calls, call => call.Any(v => v.StartsWith("abandoned", StringComparison.Ordinal)));
    }

    private static Task<RunningServer> StartAsync() => RunningServer.StartAsync(
        "--Batching:MaxBatchSize", $"{Capacity}", "--Batching:QueueCapacity", $"{Capacity}");

    /// <summary>Sends one request and returns once the model holds it, so later requests queue.</summary>
    private static async Task<Task<HttpResponseMessage>> HoldAsync(RunningServer server)
    {
        server.Gate.Hold();
        Task<HttpResponseMessage> running = server.EmbedAsync("holds the model");
        await server.Gate.Entered.WaitAsync(RunningServer.Patience);
        return running;
    }
}
