using Batching.Tests.TestSupport;

namespace Batching.Tests.Reliability;

/// <summary>
/// Every timeout value that validation accepts works, up to <see cref="Timeout.InfiniteTimeSpan"/> and
/// <see cref="TimeSpan.MaxValue"/>: .NET timers accept at most about 49.7 days, so a longer wait must be armed in steps,
/// never handed to <see cref="ITimer.Change"/> (which throws at run time, killing the dispatcher or the process).
/// </summary>
public class ExtremeTimeoutTests
{
    public static TheoryData<string, int> LongTimeouts => new()
    {
        { "60 days", 1 }, { "60 days", 2 }, { "TimeSpan.MaxValue", 1 }, { "TimeSpan.MaxValue", 2 }, { "infinite", 1 },
    };

    private static TimeSpan Parse(string timeout) => timeout switch
    {
        "60 days" => TimeSpan.FromDays(60),
        "TimeSpan.MaxValue" => TimeSpan.MaxValue,
        _ => Timeout.InfiniteTimeSpan,
    };

    [Theory]
    [MemberData(nameof(LongTimeouts))]
    public async Task A_very_long_ExecutionTimeout_serves_normally_on_the_system_clock(string timeout, int slots)
    {
        await using var processor = BatchProcessor.Create(new RecordingHandler().Handler, new BatchingOptions
        {
            ExecutionTimeout = Parse(timeout),
            ShutdownTimeout = Parse(timeout),
            MaxConcurrentBatches = slots,
            MaxDelay = TimeSpan.FromHours(1), // the largest MaxDelay validation accepts
        });

        int[] results = await Task.WhenAll(Enumerable.Range(0, 500).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();
        Assert.Equal(Enumerable.Range(0, 500).Select(RecordingHandler.Expected), results);
        Assert.Equal(3, await processor.ProcessAsync(1).WithinBoundAsync());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_60_day_ExecutionTimeout_fires_after_60_days_and_not_before(int slots)
    {
        var time = Reliably.FakeTime();
        var handler = new FaultyHandler(time) { Plan = n => n == 1 ? Fault.Hang : Fault.None, HangFor = Timeout.InfiniteTimeSpan };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            ExecutionTimeout = TimeSpan.FromDays(60),
            MaxConcurrentBatches = slots,
            MaxDelay = TimeSpan.Zero,
            TimeProvider = time,
            ShutdownTimeout = TimeSpan.Zero,
        });

        ValueTask<int> hung = processor.ProcessAsync(1);
        Assert.True(await handler.HangStarted.WaitAsync(Wait.Bound));
        time.Advance(TimeSpan.FromDays(59));
        await Wait.UntilIdleAsync(processor);
        Assert.False(hung.IsCompleted, "timed out before 60 days");

        time.Advance(TimeSpan.FromDays(1));
        await Assert.ThrowsAsync<TimeoutException>(() => hung.AsTask().WaitAsync(Wait.Bound));
        await Reliably.StillServesAsync(processor);
    }

    [Theory]
    [InlineData("60 days")]
    [InlineData("TimeSpan.MaxValue")]
    public async Task A_very_long_ShutdownTimeout_waits_for_a_hung_batch_and_DisposeAsync_never_throws(string timeout)
    {
        var (time, call, disposing) = await DisposeWhileHungAsync(Parse(timeout), hangFor: TimeSpan.FromDays(30));
        await Task.Delay(50);
        Assert.False(disposing.IsCompleted, "disposal gave up on a batch long before its ShutdownTimeout");

        time.Advance(TimeSpan.FromDays(30)); // the hung handler returns, well within the timeout
        await disposing.WithinBoundAsync();
        Assert.Equal(3, await call.WithinBoundAsync());
    }

    [Fact]
    public async Task A_60_day_ShutdownTimeout_gives_up_after_60_days()
    {
        var (time, call, disposing) = await DisposeWhileHungAsync(TimeSpan.FromDays(60), hangFor: Timeout.InfiniteTimeSpan);
        for (int day = 0; day < 59; day++)
        {
            time.Advance(TimeSpan.FromDays(1));
        }

        await Task.Delay(50);
        Assert.False(disposing.IsCompleted);
        time.Advance(TimeSpan.FromDays(1));
        await disposing.WithinBoundAsync();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => call.AsTask().WaitAsync(Wait.Bound));
    }

    [Fact]
    public async Task A_policy_that_asks_to_wait_forever_is_held_to_MaxDelay()
    {
        var time = Reliably.FakeTime();
        var handler = new RecordingHandler(time);
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxDelay = TimeSpan.FromHours(1),
            FlushPolicy = new WaitForeverPolicy(),
            TimeProvider = time,
        });

        ValueTask<int> call = processor.ProcessAsync(4);
        await Wait.UntilIdleAsync(processor);
        time.Advance(TimeSpan.FromMinutes(59));
        await Wait.UntilIdleAsync(processor);
        Assert.False(call.IsCompleted);
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(9, await call.WithinBoundAsync());
    }

    [Fact]
    public async Task An_Adaptive_latency_target_of_TimeSpan_MaxValue_works()
    {
        await using var processor = BatchProcessor.Create(new RecordingHandler().Handler, new BatchingOptions
        {
            FlushPolicy = FlushPolicy.Adaptive(new AdaptiveFlushOptions { LatencyTarget = TimeSpan.MaxValue }),
            MaxConcurrentBatches = 2,
        });
        int[] results = await Task.WhenAll(Enumerable.Range(0, 2000).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();
        Assert.Equal(Enumerable.Range(0, 2000).Select(RecordingHandler.Expected), results);
    }

    /// <summary>A processor on fake time whose only batch hangs for <paramref name="hangFor"/>, being disposed.</summary>
    private static async Task<(Microsoft.Extensions.Time.Testing.FakeTimeProvider Time, ValueTask<int> Call, Task Disposing)> DisposeWhileHungAsync(TimeSpan shutdownTimeout, TimeSpan hangFor)
    {
        var time = Reliably.FakeTime();
        var handler = new FaultyHandler(time) { Plan = _ => Fault.Hang, HangFor = hangFor };
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            ShutdownTimeout = shutdownTimeout,
            ExecutionTimeout = Timeout.InfiniteTimeSpan,
            MaxDelay = TimeSpan.Zero,
            TimeProvider = time,
        });

        ValueTask<int> call = processor.ProcessAsync(1);
        Assert.True(await handler.HangStarted.WaitAsync(Wait.Bound));
        return (time, call, processor.DisposeAsync().AsTask());
    }

    private sealed class WaitForeverPolicy : FlushPolicy
    {
        public override FlushDecision Decide(in FlushContext context) => FlushDecision.Wait(TimeSpan.MaxValue, int.MaxValue);
    }
}
