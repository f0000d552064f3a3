using System.Diagnostics;
using Batching.Tests.TestSupport;

namespace Batching.Tests.Reliability;

/// <summary>
/// A finished batch resumes its callers inline, one after another; a caller whose continuation blocks must delay its
/// siblings by about a millisecond, never forever, even when what it waits for is a sibling's result.
/// </summary>
[Collection(nameof(Serial))]
public class ResumeStallTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(16)]
    public async Task A_caller_that_blocks_on_a_siblings_result_does_not_deadlock(int batchSize)
    {
        // The handler waits until every caller awaits, so that all of them are resumed inline by the batch, in order.
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously); // the handler goes on on the pool
        using var awaiting = new CountdownEvent(batchSize);
        var handler = new RecordingHandler { Gate = gate.Task };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = batchSize,
            MaxDelay = TimeSpan.FromSeconds(10),
            FlushPolicy = FlushPolicy.Deadline, // all of them in one batch, resumed in queue order
        });
        using var lastResumed = new ManualResetEventSlim();
        bool released = false;
        ValueTask<int> first = processor.ProcessAsync(0);
        ValueTask<int>[] siblings = [.. Enumerable.Range(1, batchSize - 1).Select(i => processor.ProcessAsync(i))];

        // The first caller's continuation blocks until the last sibling has been resumed. Resumed inline in order, the
        // last would wait behind the first forever; the resume watch hands the rest to another thread instead.
        Task firstCaller = Task.Run(async () =>
        {
            awaiting.Signal();
            Assert.Equal(1, await first.ConfigureAwait(false));
            released = lastResumed.Wait(TimeSpan.FromSeconds(20));
        });
        Task[] others = [.. siblings.Select((call, i) => Task.Run(async () =>
        {
            awaiting.Signal();
            Assert.Equal(RecordingHandler.Expected(i + 1), await call.ConfigureAwait(false));
            if (i == siblings.Length - 1)
            {
                lastResumed.Set();
            }
        }))];
        Assert.True(awaiting.Wait(Wait.Bound));
        await Task.Delay(20);
        handler.Gate = null;
        gate.SetResult();

        await Task.WhenAll(others.Append(firstCaller)).WaitAsync(TimeSpan.FromSeconds(15));
        Assert.True(released, "the blocked caller was never released: its siblings waited behind it");

        // Still serving: a full batch (a partial one would wait out the Deadline policy's 10 s).
        int[] after = await Task.WhenAll(Enumerable.Range(100, batchSize).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();
        Assert.Equal(Enumerable.Range(100, batchSize).Select(RecordingHandler.Expected), after);
    }

    [Fact]
    public async Task A_caller_that_blocks_for_seconds_delays_its_siblings_by_about_a_millisecond()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously); // the handler goes on on the pool
        using var awaiting = new CountdownEvent(8);
        var handler = new RecordingHandler { Gate = gate.Task };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 8,
            MaxDelay = TimeSpan.FromSeconds(10),
            FlushPolicy = FlushPolicy.Deadline,
        });
        using var release = new ManualResetEventSlim();
        ValueTask<int> blocker = processor.ProcessAsync(0);
        ValueTask<int>[] siblings = [.. Enumerable.Range(1, 7).Select(i => processor.ProcessAsync(i))];
        var resumedAt = new long[7];
        long blockedAt = 0;
        Task blocking = Task.Run(async () =>
        {
            awaiting.Signal();
            await blocker.ConfigureAwait(false);
            Volatile.Write(ref blockedAt, Stopwatch.GetTimestamp());
            release.Wait(TimeSpan.FromSeconds(3)); // Thread.Sleep-like: holds the resuming thread
        });
        Task[] others = [.. siblings.Select((call, i) => Task.Run(async () =>
        {
            awaiting.Signal();
            await call.ConfigureAwait(false);
            resumedAt[i] = Stopwatch.GetTimestamp();
        }))];
        Assert.True(awaiting.Wait(Wait.Bound));
        await Task.Delay(20);
        handler.Gate = null;
        gate.SetResult();
        try
        {
            await Task.WhenAll(others).WaitAsync(TimeSpan.FromSeconds(2)); // long before the blocker lets go
            Assert.NotEqual(0, Volatile.Read(ref blockedAt)); // the blocker was resumed first, inline, and blocked
            TimeSpan worst = Stopwatch.GetElapsedTime(Volatile.Read(ref blockedAt), resumedAt.Max());

            // Not a timing benchmark: the bound is a hundred times the watch's period, for a busy machine.
            Assert.True(worst < TimeSpan.FromMilliseconds(200), $"siblings waited {worst.TotalMilliseconds:F1} ms behind a blocked caller");
        }
        finally
        {
            release.Set();
        }

        await blocking.WithinBoundAsync();
        int[] after = await Task.WhenAll(Enumerable.Range(100, 8).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();
        Assert.Equal(Enumerable.Range(100, 8).Select(RecordingHandler.Expected), after);
    }

    [Fact]
    public async Task A_blocked_continuation_does_not_hold_the_slot_for_the_next_batch()
    {
        await using var processor = BatchProcessor.Create(new RecordingHandler().Handler, new BatchingOptions { MaxBatchSize = 4, MaxDelay = TimeSpan.Zero });
        using var release = new ManualResetEventSlim();
        Task blocking = Task.Run(async () =>
        {
            await processor.ProcessAsync(1).ConfigureAwait(false);
            release.Wait(TimeSpan.FromSeconds(10));
        });
        await Task.Delay(50);
        try
        {
            // The slot the blocked caller's batch used is free again for everybody else.
            int[] results = await Task.WhenAll(Enumerable.Range(10, 50).Select(i => processor.ProcessAsync(i).AsTask())).WaitAsync(TimeSpan.FromSeconds(5));
            Assert.Equal(Enumerable.Range(10, 50).Select(RecordingHandler.Expected), results);
        }
        finally
        {
            release.Set();
        }

        await blocking.WithinBoundAsync();
    }
}
