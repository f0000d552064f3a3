namespace Batching.Tests.Reliability;

/// <summary>Inputs that make any batch carrying them fail, with poison isolation off, sufficient and too shallow.</summary>
public class PoisonTests
{
    private const int Total = 3000;

    private static bool IsPoison(int x) => x % 50 == 7;

    [Fact]
    public async Task Without_isolation_every_caller_sharing_a_batch_with_poison_fails_and_no_other()
    {
        var (ledger, handler, processor) = await RunAsync(depth: 0);
        await using (processor)
        {
            HashSet<int> poisonedBatches = Reliably.InputsOf(handler, c => c.Poisoned);
            Assert.Equal(poisonedBatches, ledger.Inputs(Outcome.Failed));
            Assert.True(poisonedBatches.Count > Enumerable.Range(0, Total).Count(IsPoison), "some innocent callers shared a batch with poison");
            Assert.Equal(Total, handler.ItemCount); // no reruns
            await Reliably.StillServesAsync(processor, handler);
        }
    }

    [Fact]
    public async Task With_enough_isolation_depth_exactly_the_poison_inputs_fail()
    {
        var (ledger, handler, processor) = await RunAsync(depth: 4); // 2^4 = MaxBatchSize: down to single items
        await using (processor)
        {
            HashSet<int> poison = Enumerable.Range(0, Total).Where(IsPoison).ToHashSet();
            Assert.Equal(poison, ledger.Inputs(Outcome.Failed));
            Assert.Equal(Total - poison.Count, ledger.Succeeded);
            Assert.All(poison, x => Assert.Equal(1, Assert.IsType<BatchExecutionException>(ledger.Errors[x]).BatchSize));
            await Reliably.StillServesAsync(processor, handler);
        }
    }

    [Fact]
    public async Task With_shallow_isolation_failures_are_confined_to_the_smallest_halves_reached()
    {
        var (ledger, handler, processor) = await RunAsync(depth: 2); // batches of 16 split down to quarters of <= 4
        await using (processor)
        {
            HashSet<int> failed = ledger.Inputs(Outcome.Failed);
            Assert.Superset(Enumerable.Range(0, Total).Where(IsPoison).ToHashSet(), failed);
            Assert.All(failed, x => Assert.InRange(Assert.IsType<BatchExecutionException>(ledger.Errors[x]).BatchSize, 1, 4));
            Assert.Subset(Reliably.InputsOf(handler, c => c.Poisoned), failed);
            await Reliably.StillServesAsync(processor, handler);
        }
    }

    private static async Task<(Ledger, FaultyHandler, IBatchProcessor<int, int>)> RunAsync(int depth)
    {
        // The first call is held on a fake clock while the rest queue up, so every later batch is full: a
        // poison input then always shares its batch with innocent ones.
        var time = Reliably.FakeTime();
        var handler = new FaultyHandler(time) { IsPoison = IsPoison, Plan = n => n == 1 ? Fault.Slow : Fault.None, SlowFor = TimeSpan.FromSeconds(1) };
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 16,
            MaxDelay = TimeSpan.Zero,
            PoisonIsolationDepth = depth,
            TimeProvider = time,
        });
        var ledger = new Ledger($"poison, isolation depth {depth}");
        _ = ledger.Submit(processor, 0);
        Assert.True(await handler.SlowStarted.WaitAsync(Ledger.DefaultBound));
        await Task.WhenAll(Enumerable.Range(0, 3).Select(p => Task.Run(() =>
        {
            for (int i = 1 + p; i < Total; i += 3)
            {
                _ = ledger.Submit(processor, i);
            }
        })));
        time.Advance(TimeSpan.FromSeconds(1));
        LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
        Assert.Equal(Total, report.Submitted);
        Assert.Equal(0, report.Cancelled + report.Rejected);
        return (ledger, handler, processor);
    }
}
