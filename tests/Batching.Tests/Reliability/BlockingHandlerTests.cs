using System.Diagnostics;
using Batching.Tests.TestSupport;

namespace Batching.Tests.Reliability;

/// <summary>A handler that blocks its thread (a native call, a sync-over-async wait) and ignores its token.</summary>
public class BlockingHandlerTests
{
    // The idle fast path would run a blocking handler on the caller's thread; it is opt-in (InlineWhenIdle), and
    // by default the caller is released at ExecutionTimeout however the handler behaves.
    [Fact]
    public async Task A_handler_blocking_its_thread_does_not_hold_the_caller_inside_ProcessAsync_past_the_execution_timeout()
    {
        using var release = new ManualResetEventSlim();
        BatchHandler<int, int> handler = (inputs, outputs, token) =>
        {
            if (inputs.Span[0] == 1)
            {
                release.Wait(TimeSpan.FromSeconds(10)); // deliberately ignores the token
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = FaultyHandler.Expected(inputs.Span[i]);
            }

            return ValueTask.CompletedTask;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions
        {
            MaxDelay = TimeSpan.Zero,
            MaxConcurrentBatches = 2,
            ExecutionTimeout = TimeSpan.FromMilliseconds(200),
        });
        var ledger = new Ledger("handler blocking its thread");
        try
        {
            await Wait.UntilIdleAsync(processor);
            var clock = Stopwatch.StartNew();
            Task<ValueTask<int>> calling = Task.Run(() => processor.ProcessAsync(1));
            bool returned = await Task.WhenAny(calling, Task.Delay(TimeSpan.FromSeconds(3))) == calling;
            Assert.True(returned, $"ProcessAsync itself did not return within {clock.Elapsed.TotalSeconds:F1} s: the blocking handler runs on the caller's thread");
            _ = ledger.Track(1, await calling);

            LedgerReport report = (await ledger.SettleAsync(TimeSpan.FromSeconds(3))).ThrowIfUnclean();
            Assert.Equal(1, report.Failed);
            Assert.IsType<TimeoutException>(ledger.Errors[1]);
        }
        finally
        {
            release.Set();
        }

        await Reliably.StillServesAsync(processor);
    }

    [Fact]
    public async Task With_one_slot_a_handler_blocking_past_the_timeout_fails_its_callers_and_the_queue_is_served_before_it_returns()
    {
        using var release = new ManualResetEventSlim();
        BatchHandler<int, int> handler = (inputs, outputs, token) =>
        {
            if (inputs.Span.Contains(1))
            {
                release.Wait(TimeSpan.FromSeconds(30)); // a native call: deaf to the token
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = FaultyHandler.Expected(inputs.Span[i]);
            }

            return ValueTask.CompletedTask;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions
        {
            MaxBatchSize = 1, // default MaxConcurrentBatches: 1
            ExecutionTimeout = TimeSpan.FromMilliseconds(200),
        });
        try
        {
            var clock = Stopwatch.StartNew();
            Task<int> blocked = processor.ProcessAsync(1).AsTask();
            Task<int>[] queued = [.. Enumerable.Range(2, 20).Select(i => processor.ProcessAsync(i).AsTask())];

            await Assert.ThrowsAsync<TimeoutException>(() => blocked.WaitAsync(TimeSpan.FromSeconds(10)));
            TimeSpan timedOutAfter = clock.Elapsed;
            Assert.Equal(Enumerable.Range(2, 20).Select(FaultyHandler.Expected), await Task.WhenAll(queued).WaitAsync(TimeSpan.FromSeconds(10)));
            Assert.False(release.IsSet, "the queue was served only after the blocked handler returned");
            Assert.True(timedOutAfter < TimeSpan.FromSeconds(5), $"the blocked batch timed out only after {timedOutAfter}");
        }
        finally
        {
            release.Set();
        }

        await Reliably.StillServesAsync(processor);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_handler_that_calls_its_own_processor_is_refused_at_once_and_later_calls_are_served(bool synchronously)
    {
        IBatchProcessor<int, int>? self = null;
        Exception? refusal = null;
        BatchHandler<int, int> handler = async (inputs, outputs, token) =>
        {
            if (inputs.Span.Contains(-1))
            {
                try
                {
                    // Would wait for the slot this very batch holds: a deadlock until ExecutionTimeout, then a hang for
                    // every later caller behind it. Refused instead.
                    int inner = synchronously ? self!.ProcessAsync(5).AsTask().GetAwaiter().GetResult() : await self!.ProcessAsync(5);
                    outputs.Span[0] = inner;
                    return;
                }
                catch (InvalidOperationException ex)
                {
                    refusal = ex;
                    throw;
                }
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = FaultyHandler.Expected(inputs.Span[i]);
            }
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { MaxBatchSize = 1, ExecutionTimeout = Timeout.InfiniteTimeSpan });
        self = processor;

        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => processor.ProcessAsync(-1).AsTask().WithinBoundAsync());
        Assert.IsType<InvalidOperationException>(error.InnerException);
        Assert.Contains("own batch handler", refusal!.Message, StringComparison.Ordinal);
        await Reliably.StillServesAsync(processor);
    }

    [Fact]
    public async Task Work_a_handler_leaves_behind_may_call_its_processor_once_the_batch_is_done()
    {
        IBatchProcessor<int, int>? self = null;
        var later = new TaskCompletionSource<Task<int>>(TaskCreationOptions.RunContinuationsAsynchronously);
        var batchDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        BatchHandler<int, int> handler = (inputs, outputs, token) =>
        {
            if (inputs.Span[0] == 100)
            {
                // A background task that inherits the handler's context and calls in after the batch has returned.
                _ = Task.Run(async () =>
                {
                    await batchDone.Task;
                    later.SetResult(self!.ProcessAsync(7).AsTask());
                });
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = FaultyHandler.Expected(inputs.Span[i]);
            }

            return ValueTask.CompletedTask;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { MaxBatchSize = 1 });
        self = processor;

        Assert.Equal(FaultyHandler.Expected(100), await processor.ProcessAsync(100).WithinBoundAsync());
        await Wait.UntilIdleAsync(processor);
        batchDone.SetResult();
        Assert.Equal(FaultyHandler.Expected(7), await (await later.Task.WaitAsync(Wait.Bound)).WaitAsync(Wait.Bound));
    }
}
