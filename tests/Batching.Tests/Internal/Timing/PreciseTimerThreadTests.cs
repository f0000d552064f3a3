using System.Collections.Concurrent;
using System.Diagnostics;
using Batching.Internal.Timing;
using Batching.Tests.TestSupport;

namespace Batching.Tests.Internal.Timing;

public class PreciseTimerThreadTests
{
    private sealed class Target(ConcurrentQueue<(Target, long)> log) : IDeadlineTarget
    {
        public void OnDeadline() => log.Enqueue((this, Stopwatch.GetTimestamp()));
    }

    private static long In(TimeSpan delay) => Stopwatch.GetTimestamp() + (long)(delay.TotalSeconds * Stopwatch.Frequency);

    [Fact]
    public async Task Targets_are_woken_once_each_not_before_their_deadline_and_a_later_deadline_replaces_an_earlier_one()
    {
        var log = new ConcurrentQueue<(Target, long)>();
        var first = new Target(log);
        var second = new Target(log);
        var moved = new Target(log);
        long firstDue = In(TimeSpan.FromMilliseconds(30));
        long secondDue = In(TimeSpan.FromMilliseconds(10));
        PreciseTimerThread.Schedule(first, firstDue);
        PreciseTimerThread.Schedule(second, secondDue);
        PreciseTimerThread.Schedule(moved, In(TimeSpan.FromMilliseconds(5)));
        long movedDue = In(TimeSpan.FromMilliseconds(40));
        PreciseTimerThread.Schedule(moved, movedDue);

        await Wait.UntilAsync(() => log.Count == 3, "all three targets are woken");
        await Task.Delay(50);

        var woken = log.ToArray();
        Assert.Equal([second, first, moved], woken.Select(w => w.Item1));
        Assert.True(woken[0].Item2 >= secondDue);
        Assert.True(woken[1].Item2 >= firstDue);
        Assert.True(woken[2].Item2 >= movedDue);
    }

    [Fact]
    public async Task A_cancelled_target_is_never_woken()
    {
        var log = new ConcurrentQueue<(Target, long)>();
        var cancelled = new Target(log);
        var kept = new Target(log);
        PreciseTimerThread.Schedule(cancelled, In(TimeSpan.FromMilliseconds(5)));
        PreciseTimerThread.Schedule(kept, In(TimeSpan.FromMilliseconds(20)));
        PreciseTimerThread.Cancel(cancelled);

        await Wait.UntilAsync(() => !log.IsEmpty, "the kept target is woken");
        await Task.Delay(20);

        Assert.Equal([kept], log.Select(w => w.Item1));
    }

    [Fact]
    public async Task A_partial_batch_on_the_system_clock_goes_at_its_deadline()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 10, MaxDelay = TimeSpan.FromMilliseconds(20), FlushPolicy = FlushPolicy.Deadline });
        var clock = Stopwatch.StartNew();

        Assert.Equal(7, await processor.ProcessAsync(3).WithinBoundAsync());

        // Not a precision check (the machine may be busy): it went by the deadline, not by a full batch.
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(19), $"dispatched after {clock.Elapsed}");
        Assert.Equal([3], Assert.Single(handler.Calls).Inputs);
    }
}
