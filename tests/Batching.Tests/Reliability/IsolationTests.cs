using System.Diagnostics;
using Batching.Tests.TestSupport;

namespace Batching.Tests.Reliability;

/// <summary>Processors share one precise deadline thread, which only signals: one processor's slow policy runs on that
/// processor's own dispatcher and cannot delay another processor's MaxDelay deadlines.</summary>
[Collection(nameof(Serial))]
public class IsolationTests
{
    private sealed class SlowPolicy : FlushPolicy
    {
        public int Calls;

        public override FlushDecision Decide(in FlushContext context)
        {
            Interlocked.Increment(ref Calls);
            Thread.Sleep(20); // a badly written custom policy
            return FlushDecision.Wait(TimeSpan.FromMilliseconds(1), int.MaxValue);
        }
    }

    [Fact]
    public async Task A_policy_that_spends_20_ms_per_decision_does_not_delay_another_processors_deadlines()
    {
        // The slow policy blocks a pool thread per decision, as any blocking code on the pool does; give the pool room
        // so that what is measured is the deadline path, not a starved pool on a 2-core machine.
        ThreadPool.GetMinThreads(out int workers, out int io);
        ThreadPool.SetMinThreads(Math.Max(workers, 16), io);
        try
        {
            await MeasureAsync();
        }
        finally
        {
            ThreadPool.SetMinThreads(workers, io);
        }
    }

    private static async Task MeasureAsync()
    {
        var slow = new SlowPolicy();
        await using var busy = BatchProcessor.Create(new RecordingHandler().Handler, new BatchingOptions
        {
            Name = "slow policy",
            FlushPolicy = slow,
            MaxDelay = TimeSpan.FromMinutes(1),
        });
        var stuck = Enumerable.Range(0, 5).Select(i => busy.ProcessAsync(i).AsTask()).ToArray(); // keeps asking its policy

        var handler = new RecordingHandler();
        await using var prompt = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            Name = "prompt",
            FlushPolicy = FlushPolicy.Deadline,
            MaxBatchSize = 100,
            MaxDelay = TimeSpan.FromMilliseconds(2),
        });
        await Wait.UntilAsync(() => Volatile.Read(ref slow.Calls) >= 3, "the slow policy is being asked");

        var waits = new List<double>();
        int callsBefore = Volatile.Read(ref slow.Calls);
        var measuring = Stopwatch.StartNew();
        for (int i = 0; i < 400 && (i < 60 || measuring.ElapsedMilliseconds < 300); i++)
        {
            long start = Stopwatch.GetTimestamp();
            Assert.Equal(RecordingHandler.Expected(i), await prompt.ProcessAsync(i).WithinBoundAsync());
            waits.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }

        double[] sorted = [.. waits.Order()];
        double p90 = sorted[(int)(sorted.Length * 0.9)];
        Assert.True(Volatile.Read(ref slow.Calls) - callsBefore >= 5, "the slow policy stopped being asked, so it blocked nothing");

        // Each call waits its 2 ms MaxDelay. Had the shared deadline thread run the slow policy (or waited for its
        // processor's lock), most calls would wait 20 ms or more. The bound leaves room for a busy machine.
        Assert.True(p90 < 15, $"90th percentile {p90:F1} ms (median {sorted[sorted.Length / 2]:F1} ms) behind another processor's 20 ms policy");
        await busy.DisposeAsync();
        Assert.All(stuck, t => Assert.True(t.IsCompleted));
    }
}
