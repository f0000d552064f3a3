using Batching.Tests.TestSupport;

namespace Batching.Tests;

public class ShutdownTests
{
    [Fact]
    public async Task Dispose_drains_queued_items_without_waiting_for_the_policy()
    {
        var handler = new RecordingHandler();
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 10, MaxDelay = TimeSpan.FromHours(1), FlushPolicy = FlushPolicy.Deadline });
        var calls = Enumerable.Range(0, 25).Select(i => processor.ProcessAsync(i).AsTask()).ToArray();

        await processor.DisposeAsync().AsTask().WithinBoundAsync();

        Assert.Equal(Enumerable.Range(0, 25).Select(RecordingHandler.Expected), await Task.WhenAll(calls));
        Assert.All(handler.Calls, c => Assert.InRange(c.Inputs.Length, 1, 10));
    }

    [Fact]
    public async Task Calls_after_dispose_throw_ObjectDisposedException()
    {
        var processor = BatchProcessor.Create(new RecordingHandler().Handler);
        await processor.DisposeAsync();

        var error = await Assert.ThrowsAsync<ObjectDisposedException>(() => processor.ProcessAsync(1).AsTask());
        Assert.Contains("disposed", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dispose_fails_what_is_left_after_the_shutdown_timeout()
    {
        var handler = new RecordingHandler { Gate = new TaskCompletionSource().Task };
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 2,
            MaxDelay = TimeSpan.Zero,
            ShutdownTimeout = TimeSpan.FromMilliseconds(100),
        });
        var running = new[] { processor.ProcessAsync(0).AsTask(), processor.ProcessAsync(1).AsTask() };
        await handler.Started.WaitAsync(Wait.Bound);
        var queued = processor.ProcessAsync(2).AsTask();

        await processor.DisposeAsync().AsTask().WithinBoundAsync();

        foreach (var call in running.Append(queued))
        {
            var error = await Assert.ThrowsAsync<ObjectDisposedException>(() => call.WaitAsync(Wait.Bound));
            Assert.Contains("ShutdownTimeout", error.Message, StringComparison.Ordinal);
        }

        Assert.True(handler.Calls.Single().Token.IsCancellationRequested);
    }

    [Fact]
    public async Task Callers_waiting_for_queue_space_fail_at_dispose()
    {
        var handler = new RecordingHandler();
        var gate = new TaskCompletionSource();
        handler.Gate = gate.Task;
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 1, QueueCapacity = 1, MaxDelay = TimeSpan.Zero });
        var running = processor.ProcessAsync(0).AsTask();
        await handler.Started.WaitAsync(Wait.Bound);
        var queued = processor.ProcessAsync(1).AsTask();
        var waiting = processor.ProcessAsync(2).AsTask();

        ValueTask disposing = processor.DisposeAsync();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting.WaitAsync(Wait.Bound));
        handler.Gate = null;
        gate.SetResult();
        await disposing.AsTask().WithinBoundAsync();

        Assert.Equal(1, await running);
        Assert.Equal(3, await queued);
    }

    [Fact]
    public async Task Dispose_is_idempotent_and_concurrent_calls_share_one_shutdown()
    {
        var processor = BatchProcessor.Create(new RecordingHandler().Handler);
        var disposals = Enumerable.Range(0, 8).Select(_ => Task.Run(() => processor.DisposeAsync().AsTask())).ToArray();
        await Task.WhenAll(disposals).WithinBoundAsync();
        await processor.DisposeAsync();
    }

    [Fact]
    public async Task Calls_racing_dispose_each_complete_exactly_once()
    {
        for (int round = 0; round < 20; round++)
        {
            var handler = new RecordingHandler();
            var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 16, MaxDelay = TimeSpan.FromMilliseconds(1) });
            var calls = new List<Task<int>>();
            var producers = Enumerable.Range(0, 4).Select(p => Task.Run(() =>
            {
                var mine = new List<Task<int>>();
                for (int i = 0; i < 500; i++)
                {
                    mine.Add(processor.ProcessAsync(p * 1000 + i).AsTask());
                }

                return mine;
            })).ToArray();
            var disposing = Task.Run(async () => await processor.DisposeAsync());

            foreach (var producer in producers)
            {
                calls.AddRange(await producer.WithinBoundAsync());
            }

            await disposing.WithinBoundAsync();
            await Task.WhenAll(calls.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default))).WithinBoundAsync();
            var processed = handler.AllInputs.ToHashSet();
            foreach (var call in calls)
            {
                if (call.IsFaulted)
                {
                    Assert.IsType<ObjectDisposedException>(call.Exception!.InnerException);
                }
                else
                {
                    Assert.True(call.IsCompletedSuccessfully);
                }
            }

            Assert.Equal(calls.Count(c => c.IsCompletedSuccessfully), processed.Count);
        }
    }
}
