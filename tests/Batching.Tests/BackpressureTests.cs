using Batching.Tests.TestSupport;
using Batching.Internal;

namespace Batching.Tests;

public class BackpressureTests
{
    /// <summary>A processor whose first batch (items 0 and 1) is running and blocked on the gate, with an empty queue of capacity 2.</summary>
    private static async Task<(BatchEngine<int, int> Engine, RecordingHandler Handler, TaskCompletionSource Gate, Task<int>[] Running)> StartBlockedAsync(QueueFullMode mode)
    {
        var handler = new RecordingHandler();
        var gate = new TaskCompletionSource();
        handler.Gate = gate.Task;
        var engine = (BatchEngine<int, int>)BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 2,
            QueueCapacity = 2,
            QueueFullMode = mode,

            // Long enough that the first two calls always form one full batch, short enough for a lone straggler.
            MaxDelay = TimeSpan.FromMilliseconds(50),
            FlushPolicy = FlushPolicy.Deadline,
        });
        var running = new[] { engine.ProcessAsync(0).AsTask(), engine.ProcessAsync(1).AsTask() };
        await handler.Started.WaitAsync(Wait.Bound);
        await Wait.UntilAsync(() => engine.QueuedItems == 0, "the first batch leaves the queue");
        return (engine, handler, gate, running);
    }

    [Fact]
    public async Task Reject_mode_throws_at_once_when_full_and_loses_nothing_accepted()
    {
        var (processor, handler, gate, running) = await StartBlockedAsync(QueueFullMode.Reject);
        await using var _ = processor;
        var queued = new[] { processor.ProcessAsync(2).AsTask(), processor.ProcessAsync(3).AsTask() };

        ValueTask<int> rejected = processor.ProcessAsync(4);
        Assert.True(rejected.IsFaulted);
        var error = await Assert.ThrowsAsync<BatchQueueFullException>(() => rejected.AsTask());
        Assert.Equal(2, error.Capacity);
        Assert.Contains("QueueCapacity", error.Message, StringComparison.Ordinal);

        handler.Gate = null;
        gate.SetResult();
        Assert.Equal(new[] { 1, 3, 5, 7 }, await Task.WhenAll(running.Concat(queued)).WithinBoundAsync());
        Assert.DoesNotContain(4, handler.AllInputs);
    }

    [Fact]
    public async Task Wait_mode_waits_for_space_in_arrival_order()
    {
        var (engine, handler, gate, running) = await StartBlockedAsync(QueueFullMode.Wait);
        await using var _ = engine;
        var processor = engine;
        var rest = Enumerable.Range(2, 5).Select(i => processor.ProcessAsync(i).AsTask()).ToArray();

        Assert.Equal(2, engine.QueuedItems);
        Assert.Equal(3, engine.WaitingForSpace);
        Assert.All(rest, t => Assert.False(t.IsCompleted));

        handler.Gate = null;
        gate.SetResult();
        Assert.Equal(new[] { 1, 3, 5, 7, 9, 11, 13 }, await Task.WhenAll(running.Concat(rest)).WithinBoundAsync());
        Assert.Equal(Enumerable.Range(0, 7), handler.AllInputs);
    }

    [Fact]
    public async Task Waiting_for_space_is_cancellable_and_the_item_never_runs()
    {
        var (engine, handler, gate, running) = await StartBlockedAsync(QueueFullMode.Wait);
        await using var _ = engine;
        var processor = engine;
        var queued = new[] { processor.ProcessAsync(2).AsTask(), processor.ProcessAsync(3).AsTask() };
        using var cts = new CancellationTokenSource();
        var waiting = processor.ProcessAsync(99, cts.Token).AsTask();
        var behind = processor.ProcessAsync(4).AsTask();

        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(Wait.Bound));
        Assert.Equal(1, engine.WaitingForSpace);

        handler.Gate = null;
        gate.SetResult();
        Assert.Equal(new[] { 1, 3, 5, 7, 9 }, await Task.WhenAll(running.Concat(queued).Append(behind)).WithinBoundAsync());
        Assert.DoesNotContain(99, handler.AllInputs);
    }

    [Fact]
    public async Task MaxDelay_counts_from_the_call_also_for_callers_that_waited_for_space()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        var handler = new RecordingHandler(time);
        var gate = new TaskCompletionSource();
        handler.Gate = gate.Task;
        var engine = (BatchEngine<int, int>)BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 2,
            QueueCapacity = 2,
            MaxDelay = TimeSpan.FromMilliseconds(10),
            FlushPolicy = FlushPolicy.Deadline,
            TimeProvider = time,
            ExecutionTimeout = Timeout.InfiniteTimeSpan,
        });
        await using var _ = engine;
        DateTimeOffset start = time.GetUtcNow();
        var running = new[] { engine.ProcessAsync(0).AsTask(), engine.ProcessAsync(1).AsTask() }; // a full batch, blocked
        await handler.Started.WaitAsync(Wait.Bound);
        var queued = new[] { engine.ProcessAsync(2).AsTask(), engine.ProcessAsync(3).AsTask() }; // a full queue
        Task<int> late = engine.ProcessAsync(4).AsTask();                                              // waits for space
        Assert.Equal(1, engine.WaitingForSpace);

        time.Advance(TimeSpan.FromMilliseconds(8));
        handler.Gate = null;
        gate.SetResult(); // {0,1} returns, {2,3} goes at once, and 4 is admitted 8 ms after it called
        await Task.WhenAll(running.Concat(queued)).WithinBoundAsync();
        await Wait.UntilIdleAsync(engine);
        Assert.False(late.IsCompleted);

        time.Advance(TimeSpan.FromMilliseconds(2)); // 10 ms after the call: its MaxDelay, not 10 ms after admission
        Assert.Equal(9, await late.WithinBoundAsync());
        BatchCall lateBatch = handler.Calls.Single(c => c.Inputs.Contains(4));
        Assert.Equal(TimeSpan.FromMilliseconds(10), lateBatch.StartedAt - start);
    }
}
