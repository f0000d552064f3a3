using Batching.Tests.TestSupport;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.Policies;

/// <summary>When batches go, on fake time, through the real engine.</summary>
public class FlushTimingTests
{
    private static readonly TimeSpan MaxDelay = TimeSpan.FromMilliseconds(10);

    private static (IBatchProcessor<int, int> Processor, RecordingHandler Handler, FakeTimeProvider Time) Create(FlushPolicy policy, int maxBatchSize = 8, Action<BatchingOptions>? configure = null)
    {
        var time = new FakeTimeProvider();
        var handler = new RecordingHandler(time);
        var options = new BatchingOptions { MaxBatchSize = maxBatchSize, MaxDelay = MaxDelay, FlushPolicy = policy, TimeProvider = time, ExecutionTimeout = Timeout.InfiniteTimeSpan };
        configure?.Invoke(options);
        return (BatchProcessor.Create(handler.Handler, options), handler, time);
    }

    [Fact]
    public async Task Deadline_holds_a_partial_batch_exactly_MaxDelay_from_the_first_arrival()
    {
        var (processor, handler, time) = Create(FlushPolicy.Deadline);
        await using var _ = processor;
        DateTimeOffset start = time.GetUtcNow();
        var calls = Enumerable.Range(0, 3).Select(i => processor.ProcessAsync(i)).ToArray();

        await Wait.UntilIdleAsync(processor);
        time.Advance(MaxDelay - TimeSpan.FromTicks(1));
        await Wait.UntilIdleAsync(processor);
        Assert.Empty(handler.Calls);

        time.Advance(TimeSpan.FromTicks(1));
        foreach (var call in calls)
        {
            await call.WithinBoundAsync();
        }

        BatchCall batch = Assert.Single(handler.Calls);
        Assert.Equal([0, 1, 2], batch.Inputs);
        Assert.Equal(start + MaxDelay, batch.StartedAt);
    }

    [Fact]
    public async Task Deadline_timer_is_not_reset_by_later_arrivals()
    {
        var (processor, handler, time) = Create(FlushPolicy.Deadline);
        await using var _ = processor;
        DateTimeOffset start = time.GetUtcNow();
        var first = processor.ProcessAsync(1);
        await Wait.UntilIdleAsync(processor);
        time.Advance(TimeSpan.FromMilliseconds(6));
        var second = processor.ProcessAsync(2);
        await Wait.UntilIdleAsync(processor);
        time.Advance(TimeSpan.FromMilliseconds(4));

        await first.WithinBoundAsync();
        await second.WithinBoundAsync();
        BatchCall batch = Assert.Single(handler.Calls);
        Assert.Equal([1, 2], batch.Inputs);
        Assert.Equal(start + MaxDelay, batch.StartedAt);
    }

    [Fact]
    public async Task Deadline_dispatches_a_full_batch_without_waiting()
    {
        var (processor, handler, time) = Create(FlushPolicy.Deadline, maxBatchSize: 4);
        await using var _ = processor;
        var results = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();

        Assert.Equal([1, 3, 5, 7], results);
        Assert.Equal(time.Start, Assert.Single(handler.Calls).StartedAt);
    }

    [Fact]
    public async Task Deadline_counts_from_arrival_not_from_when_a_slot_frees()
    {
        var (processor, handler, time) = Create(FlushPolicy.Deadline, maxBatchSize: 2);
        await using var _ = processor;
        var gate = new TaskCompletionSource();
        handler.Gate = gate.Task;
        var busy = new[] { processor.ProcessAsync(0), processor.ProcessAsync(1) };
        await handler.Started.WaitAsync(Wait.Bound);

        var late = processor.ProcessAsync(2);
        time.Advance(MaxDelay * 3);
        handler.Gate = null;
        gate.SetResult();

        await late.WithinBoundAsync();
        Assert.Equal(2, handler.Calls.Count);
        Assert.Equal(time.Start + MaxDelay * 3, handler.Calls.Last().StartedAt);
        await Task.WhenAll(busy.Select(b => b.AsTask()));
    }

    [Fact]
    public async Task Size_dispatches_a_preferred_size_at_once_and_the_rest_at_the_deadline()
    {
        var (processor, handler, time) = Create(FlushPolicy.Size(2), maxBatchSize: 8);
        await using var _ = processor;
        var gate = new TaskCompletionSource();
        handler.Gate = gate.Task;
        var blocker = processor.ProcessAsync(-1);
        time.Advance(MaxDelay);
        await handler.Started.WaitAsync(Wait.Bound);

        var calls = Enumerable.Range(0, 3).Select(i => processor.ProcessAsync(i)).ToArray();
        handler.Gate = null;
        gate.SetResult();
        await calls[0].WithinBoundAsync();
        await calls[1].WithinBoundAsync();
        await Wait.UntilIdleAsync(processor);
        Assert.Equal(2, handler.Calls.Count);
        Assert.Equal([0, 1], handler.Calls.Last().Inputs);

        time.Advance(MaxDelay);
        await calls[2].WithinBoundAsync();
        Assert.Equal([2], handler.Calls.Last().Inputs);
        await blocker;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public async Task Adaptive_has_no_fixed_wait_at_low_load(int items)
    {
        var (processor, handler, _) = Create(FlushPolicy.Adaptive());
        await using var __ = processor;
        for (int i = 0; i < items; i++)
        {
            // Fake time never moves: any wait would hang this test.
            Assert.Equal(RecordingHandler.Expected(i), await processor.ProcessAsync(i).WithinBoundAsync());
        }

        Assert.Equal(items, handler.Calls.Count);
    }

    [Fact]
    public async Task With_InlineWhenIdle_a_lone_item_runs_on_the_callers_thread_and_completes_before_ProcessAsync_returns()
    {
        int? handlerThread = null;
        BatchHandler<int, int> handler = (inputs, outputs, _) =>
        {
            handlerThread = Environment.CurrentManagedThreadId;
            outputs.Span[0] = inputs.Span[0] + 1;
            return ValueTask.CompletedTask;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { FlushPolicy = FlushPolicy.Adaptive(), InlineWhenIdle = true });
        await Wait.UntilIdleAsync(processor);

        // On a pool thread: the fast path never runs a handler under a caller's SynchronizationContext (xunit has one).
        (bool completed, int caller, int result) = await Task.Run(async () =>
        {
            ValueTask<int> call = processor.ProcessAsync(41);
            bool completedAtOnce = call.IsCompletedSuccessfully;
            return (completedAtOnce, Environment.CurrentManagedThreadId, await call);
        });

        Assert.True(completed);
        Assert.Equal(caller, handlerThread);
        Assert.Equal(42, result);
    }

    [Fact]
    public async Task With_InlineWhenIdle_a_caller_under_a_SynchronizationContext_is_served_off_its_thread()
    {
        int? handlerThread = null;
        BatchHandler<int, int> handler = (inputs, outputs, _) =>
        {
            handlerThread = Environment.CurrentManagedThreadId;
            outputs.Span[0] = inputs.Span[0] + 1;
            return ValueTask.CompletedTask;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { InlineWhenIdle = true });
        await Wait.UntilIdleAsync(processor);

        Assert.NotNull(SynchronizationContext.Current); // xunit's
        int caller = Environment.CurrentManagedThreadId;
        Assert.Equal(42, await processor.ProcessAsync(41));
        Assert.NotEqual(caller, handlerThread);
    }

    [Fact]
    public async Task Without_InlineWhenIdle_the_handler_never_runs_on_the_callers_thread()
    {
        var threads = new System.Collections.Concurrent.ConcurrentQueue<int>();
        BatchHandler<int, int> handler = (inputs, outputs, _) =>
        {
            threads.Enqueue(Environment.CurrentManagedThreadId);
            outputs.Span[0] = inputs.Span[0] + 1;
            return ValueTask.CompletedTask;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { FlushPolicy = FlushPolicy.Adaptive() });
        for (int i = 0; i < 10; i++)
        {
            await Wait.UntilIdleAsync(processor);

            // A dedicated thread is never a pool thread, so the handler can only run on it if ProcessAsync ran it inline.
            int callerThread = 0;
            ValueTask<int> call = default;
            var caller = new Thread(() =>
            {
                callerThread = Environment.CurrentManagedThreadId;
                call = processor.ProcessAsync(i);
            });
            caller.Start();
            caller.Join();

            Assert.Equal(i + 1, await call.WithinBoundAsync());
            Assert.NotEqual(callerThread, threads.Last());
        }
    }

    [Fact]
    public async Task Adaptive_batches_grow_while_the_previous_batch_runs()
    {
        var (processor, handler, _) = Create(FlushPolicy.Adaptive(), maxBatchSize: 100);
        await using var __ = processor;
        var gate = new TaskCompletionSource();
        handler.Gate = gate.Task;
        var first = processor.ProcessAsync(-1);
        await handler.Started.WaitAsync(Wait.Bound);

        var queued = Enumerable.Range(0, 50).Select(i => processor.ProcessAsync(i).AsTask()).ToArray();
        handler.Gate = null;
        gate.SetResult();
        await Task.WhenAll(queued).WithinBoundAsync();
        await first;

        Assert.Equal(2, handler.Calls.Count);
        Assert.Equal(50, handler.Calls.Last().Inputs.Length);
    }

    [Fact]
    public async Task A_custom_policy_plugs_in_and_the_MaxDelay_bound_still_holds()
    {
        var (processor, handler, time) = Create(new NeverFlush(), maxBatchSize: 8);
        await using var _ = processor;
        var call = processor.ProcessAsync(7);
        await Wait.UntilIdleAsync(processor);
        Assert.Empty(handler.Calls);

        time.Advance(MaxDelay);
        Assert.Equal(15, await call.WithinBoundAsync());
    }

    [Fact]
    public async Task A_throwing_custom_policy_degrades_to_dispatching_at_once()
    {
        var (processor, _, _) = Create(new ThrowingPolicy(), maxBatchSize: 8);
        await using var _ = processor;
        Assert.Equal(15, await processor.ProcessAsync(7).WithinBoundAsync());
    }

    private sealed class NeverFlush : FlushPolicy
    {
        public override FlushDecision Decide(in FlushContext context) => FlushDecision.Wait(TimeSpan.FromDays(1), int.MaxValue);
    }

    private sealed class ThrowingPolicy : FlushPolicy
    {
        public override FlushDecision Decide(in FlushContext context) => throw new InvalidOperationException("broken policy");
    }
}
