using Batching.Tests.TestSupport;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests;

public class FailureTests
{
    [Fact]
    public async Task A_throwing_handler_fails_every_caller_of_the_batch_and_the_processor_keeps_serving()
    {
        var handler = new RecordingHandler { IsPoison = x => x == 3 };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 4, MaxDelay = TimeSpan.FromSeconds(5), FlushPolicy = FlushPolicy.Deadline });
        var calls = Enumerable.Range(0, 4).Select(i => processor.ProcessAsync(i).AsTask()).ToArray();

        foreach (var call in calls)
        {
            var error = await Assert.ThrowsAsync<BatchExecutionException>(() => call.WaitAsync(Wait.Bound));
            Assert.IsType<InvalidOperationException>(error.InnerException);
            Assert.Contains("InvalidOperationException", error.Message, StringComparison.Ordinal);
            Assert.Contains("poison input 3", error.Message, StringComparison.Ordinal);
            Assert.Equal(4, error.BatchSize);
        }

        var next = await Task.WhenAll(Enumerable.Range(10, 4).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();
        Assert.Equal([21, 23, 25, 27], next);
    }

    [Fact]
    public async Task A_handler_that_throws_synchronously_is_handled_like_an_async_failure()
    {
        BatchHandler<int, int> handler = (_, _, _) => throw new FormatException("sync boom");
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { MaxDelay = TimeSpan.Zero });

        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => processor.ProcessAsync(1).AsTask().WaitAsync(Wait.Bound));
        Assert.IsType<FormatException>(error.InnerException);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task Poison_isolation_fails_only_the_failing_inputs_when_deep_enough(int depth)
    {
        var handler = new RecordingHandler { IsPoison = x => x == 5 };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 8, MaxDelay = TimeSpan.FromSeconds(5), PoisonIsolationDepth = depth, FlushPolicy = FlushPolicy.Deadline });
        var calls = Enumerable.Range(0, 8).Select(i => processor.ProcessAsync(i).AsTask()).ToArray();
        await Task.WhenAll(calls.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default))).WithinBoundAsync();

        var failed = Enumerable.Range(0, 8).Where(i => calls[i].IsFaulted).ToArray();
        if (depth >= 3)
        {
            Assert.Equal([5], failed);
            Assert.True(handler.Calls.Count <= (1 << (depth + 1)) - 1, $"{handler.Calls.Count} handler calls");
        }
        else
        {
            Assert.Equal(8, failed.Length);
            Assert.Single(handler.Calls);
        }

        foreach (int i in Enumerable.Range(0, 8).Except(failed))
        {
            Assert.Equal(RecordingHandler.Expected(i), await calls[i]);
        }

        var poisoned = await Assert.ThrowsAsync<BatchExecutionException>(() => calls[5]);
        Assert.IsType<InvalidOperationException>(poisoned.InnerException);
    }

    [Fact]
    public async Task A_handler_that_writes_no_outputs_never_hands_callers_garbage()
    {
        BatchHandler<int, string> handler = (_, _, _) => ValueTask.CompletedTask;
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { MaxDelay = TimeSpan.Zero });

        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => processor.ProcessAsync(1).AsTask().WaitAsync(Wait.Bound));
        Assert.Contains("without writing outputs[0]", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_handler_that_writes_fewer_outputs_fails_only_the_unwritten_ones()
    {
        BatchHandler<int, string> handler = (inputs, outputs, _) =>
        {
            for (int i = 0; i < inputs.Length / 2; i++)
            {
                outputs.Span[i] = inputs.Span[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            return ValueTask.CompletedTask;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { MaxBatchSize = 4, MaxDelay = TimeSpan.FromSeconds(5), FlushPolicy = FlushPolicy.Deadline });
        var calls = Enumerable.Range(0, 4).Select(i => processor.ProcessAsync(i).AsTask()).ToArray();

        Assert.Equal("0", await calls[0].WithinBoundAsync());
        Assert.Equal("1", await calls[1].WithinBoundAsync());
        await Assert.ThrowsAsync<BatchExecutionException>(() => calls[2]);
        await Assert.ThrowsAsync<BatchExecutionException>(() => calls[3]);
    }

    [Fact]
    public async Task Stale_outputs_from_an_earlier_batch_never_reach_another_caller()
    {
        int call = 0;
        BatchHandler<int, int> handler = (inputs, outputs, _) =>
        {
            // The first batch writes everything; the second writes nothing.
            if (Interlocked.Increment(ref call) == 1)
            {
                outputs.Span.Fill(42);
            }

            return ValueTask.CompletedTask;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { MaxDelay = TimeSpan.Zero, OutputCheck = OutputCheck.RejectDefault });

        Assert.Equal(42, await processor.ProcessAsync(1).WithinBoundAsync());
        await Assert.ThrowsAsync<BatchExecutionException>(() => processor.ProcessAsync(2).AsTask().WaitAsync(Wait.Bound));
    }

    [Fact]
    public async Task With_OutputCheck_None_default_outputs_are_returned()
    {
        BatchHandler<int, string?> handler = (_, _, _) => ValueTask.CompletedTask;
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { MaxDelay = TimeSpan.Zero, OutputCheck = OutputCheck.None });
        Assert.Null(await processor.ProcessAsync(1).WithinBoundAsync());
    }

    [Fact]
    public async Task A_batch_past_its_execution_timeout_fails_its_callers_and_frees_its_slot()
    {
        var time = new FakeTimeProvider();
        var stuck = new TaskCompletionSource();
        CancellationToken seen = default;
        int calls = 0;
        BatchHandler<int, int> handler = async (inputs, outputs, token) =>
        {
            if (Interlocked.Increment(ref calls) == 1)
            {
                seen = token;
                await stuck.Task; // ignores its token: the engine must not depend on it
            }

            outputs.Span[0] = inputs.Span[0] + 100;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions
        {
            MaxDelay = TimeSpan.Zero,
            ExecutionTimeout = TimeSpan.FromSeconds(2),
            ShutdownTimeout = TimeSpan.Zero,
            TimeProvider = time,
        });
        var hung = processor.ProcessAsync(1);
        await Wait.UntilAsync(() => Volatile.Read(ref calls) == 1, "the first batch starts");
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.False(hung.IsCompleted);

        time.Advance(TimeSpan.FromSeconds(1));
        var error = await Assert.ThrowsAsync<TimeoutException>(() => hung.AsTask().WaitAsync(Wait.Bound));
        Assert.Contains("ExecutionTimeout", error.Message, StringComparison.Ordinal);
        Assert.True(seen.IsCancellationRequested);

        Assert.Equal(102, await processor.ProcessAsync(2).WithinBoundAsync());
        stuck.SetResult();
    }

    [Fact]
    public async Task A_timer_left_armed_by_an_earlier_batch_never_times_out_a_later_one_early()
    {
        var time = new FakeTimeProvider();
        var gate = new TaskCompletionSource();
        int calls = 0;
        BatchHandler<int, int> handler = async (inputs, outputs, token) =>
        {
            if (Interlocked.Increment(ref calls) == 2)
            {
                await gate.Task; // the second batch hangs, ignoring its token
            }

            outputs.Span[0] = inputs.Span[0] + 100;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions
        {
            MaxDelay = TimeSpan.Zero,
            ExecutionTimeout = TimeSpan.FromSeconds(10),
            ShutdownTimeout = TimeSpan.Zero,
            TimeProvider = time,
        });

        Assert.Equal(101, await processor.ProcessAsync(1).WithinBoundAsync()); // arms the batch's timer for t = 10 s
        time.Advance(TimeSpan.FromSeconds(9));
        var hung = processor.ProcessAsync(2);                                     // same batch object, starts at t = 9 s
        await Wait.UntilAsync(() => Volatile.Read(ref calls) == 2, "the second batch starts");

        time.Advance(TimeSpan.FromSeconds(1));                                    // t = 10 s: the old expiry fires
        await Wait.UntilIdleAsync(processor);
        Assert.False(hung.IsCompleted, "timed out 1 s into a 10 s timeout");

        time.Advance(TimeSpan.FromSeconds(9));                                    // t = 19 s: its own timeout
        await Assert.ThrowsAsync<TimeoutException>(() => hung.AsTask().WaitAsync(Wait.Bound));
        gate.SetResult();
    }
}
