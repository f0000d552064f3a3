using Batching.Internal;
using Batching.Tests.TestSupport;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.Requests;

/// <summary>A backlog per priority level, drained by batches of <see cref="MaxBatchSize"/> with nothing else arriving.</summary>
public sealed record Backlog(int MaxBatchSize, int[]? Weights, int[] Items)
{
    public int Levels => Items.Length;

    public override string ToString() =>
        $"MaxBatchSize={MaxBatchSize} Weights=[{(Weights is null ? "default" : string.Join(",", Weights))}] Items=[{string.Join(",", Items)}]";
}

public static class PriorityArbitraries
{
    public static Arbitrary<Backlog> Backlogs()
    {
        Gen<Backlog> backlog =
            from levels in Gen.Choose(2, 4)
            from batch in Gen.Choose(1, 12)
            from explicitWeights in Gen.Elements(true, false)
            from weights in Gen.ArrayOf(Gen.Choose(1, 6), levels)
            from extra in Gen.ArrayOf(Gen.Choose(0, 400), levels)
            select Make(batch, explicitWeights ? weights : null, extra);
        return backlog.ToArbitrary();
    }

    /// <summary>Enough items per level that every level has work for at least 120 batches, plus some at random.</summary>
    private static Backlog Make(int batch, int[]? weights, int[] extra)
    {
        int levels = extra.Length;
        int[] w = weights ?? [.. Enumerable.Range(0, levels).Select(l => 1 << (levels - 1 - l))];
        int total = w.Sum();
        int[] items = [.. Enumerable.Range(0, levels).Select(l => (int)Math.Ceiling(120.0 * batch * w[l] / total) + w[l] + extra[l])];
        return new Backlog(batch, weights, items);
    }
}

public class PriorityTests
{
    private const int LevelBase = 1_000_000;

    private static int LevelOf(int input) => input / LevelBase;

    [Property(Arbitrary = [typeof(PriorityArbitraries)], MaxTest = 25)]
    public async Task Every_level_with_work_receives_its_share_of_every_100_consecutive_batches(Backlog backlog)
    {
        int levels = backlog.Levels;
        int[] weights = backlog.Weights ?? [.. Enumerable.Range(0, levels).Select(l => 1 << (levels - 1 - l))];
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = backlog.MaxBatchSize,
            QueueCapacity = 100_000,
            PriorityLevels = levels,
            PriorityWeights = backlog.Weights,
        });
        Task<int> first = processor.ProcessAsync(-1).AsTask();
        await handler.Started.WaitAsync(Wait.Bound);

        // Arrival order interleaves the levels at random; the shares must not depend on it.
        var random = new Random(backlog.GetHashCode());
        var pending = new List<(int Level, int Seq)>();
        for (int level = 0; level < levels; level++)
        {
            pending.AddRange(Enumerable.Range(0, backlog.Items[level]).Select(seq => (level, seq)));
        }

        var calls = new List<Task<int>>();
        var next = new int[levels];
        foreach (int level in pending.Select(p => p.Level).OrderBy(_ => random.Next()))
        {
            calls.Add(processor.ProcessAsync(level * LevelBase + next[level]++, new RequestOptions(level)).AsTask());
        }

        handler.Release(gate);
        await Task.WhenAll(calls).WithinBoundAsync();
        await first;

        int[][] batches = [.. handler.Calls.Skip(1).Select(c => c.Inputs)];
        Assert.All(batches, b => Assert.True(b.Length <= backlog.MaxBatchSize));

        // FIFO within each level.
        for (int level = 0; level < levels; level++)
        {
            int[] order = [.. batches.SelectMany(b => b).Where(x => LevelOf(x) == level).Select(x => x % LevelBase)];
            Assert.Equal(Enumerable.Range(0, backlog.Items[level]), order);
        }

        // Batches during which every level still had work after the batch was formed.
        var dispatched = new int[levels];
        var perBatch = new List<int[]>();
        foreach (int[] batch in batches)
        {
            var counts = new int[levels];
            foreach (int x in batch)
            {
                counts[LevelOf(x)]++;
                dispatched[LevelOf(x)]++;
            }

            if (Enumerable.Range(0, levels).Any(l => dispatched[l] >= backlog.Items[l]))
            {
                break;
            }

            perBatch.Add(counts);
        }

        Assert.True(perBatch.Count >= 100, $"only {perBatch.Count} batches had every level busy: {backlog}");
        int totalWeight = weights.Sum();
        for (int start = 0; start + 100 <= perBatch.Count; start++)
        {
            var window = perBatch.GetRange(start, 100);
            int items = window.Sum(c => c.Sum());
            for (int level = 0; level < levels; level++)
            {
                int got = window.Sum(c => c[level]);
                double share = (double)weights[level] / totalWeight;
                // The fairness rule: at least its share, less one round of the deficit round robin.
                Assert.True(got >= share * items - totalWeight,
                    $"level {level} got {got} of {items} items in batches {start}..{start + 99} (share {share:P1}): {backlog}");
            }
        }
    }

    [Fact]
    public async Task With_default_weights_each_level_gets_twice_the_share_of_the_next()
    {
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 7, PriorityLevels = 3 });
        Task<int> first = processor.ProcessAsync(-1).AsTask();
        await handler.Started.WaitAsync(Wait.Bound);
        var calls = new List<Task<int>>();
        for (int i = 0; i < 70; i++)
        {
            // Lowest priority first: arrival order must not matter.
            for (int level = 2; level >= 0; level--)
            {
                calls.Add(processor.ProcessAsync(level * LevelBase + i, new RequestOptions(level)).AsTask());
            }
        }

        handler.Release(gate);
        await Task.WhenAll(calls).WithinBoundAsync();
        await first;

        // The first 10 batches (70 items) are dispatched 4 : 2 : 1.
        int[] firstItems = [.. handler.Calls.Skip(1).Take(10).SelectMany(c => c.Inputs)];
        Assert.Equal(70, firstItems.Length);
        Assert.Equal([40, 20, 10], Enumerable.Range(0, 3).Select(l => firstItems.Count(x => LevelOf(x) == l)));
    }

    [Fact]
    public async Task A_flood_at_level_0_does_not_starve_level_1()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 8, PriorityLevels = 2, QueueCapacity = 64 });
        using var stop = new CancellationTokenSource();

        // Eight callers keep level 0 saturated; one caller at level 1 must still make progress.
        var flood = Enumerable.Range(0, 8).Select(c => Task.Run(async () =>
        {
            for (int i = 0; i < 20_000 && !stop.IsCancellationRequested; i++)
            {
                await processor.ProcessAsync(c, new RequestOptions(0));
            }
        })).ToArray();
        for (int i = 0; i < 200; i++)
        {
            Assert.Equal(RecordingHandler.Expected(LevelBase + i), await processor.ProcessAsync(LevelBase + i, new RequestOptions(1)).WithinBoundAsync());
        }

        stop.Cancel();
        await Task.WhenAll(flood).WithinBoundAsync();
    }

    [Fact]
    public async Task Callers_waiting_for_space_are_admitted_by_the_same_shares()
    {
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        await using var processor = (BatchEngine<int, int>)BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 3,
            QueueCapacity = 3,
            PriorityLevels = 2,
        });
        Task<int> first = processor.ProcessAsync(-1).AsTask();
        await handler.Started.WaitAsync(Wait.Bound);
        await Wait.UntilAsync(() => processor.QueuedItems == 0, "the first batch leaves the queue");

        // The queue fills with level 0; 30 more level-0 callers wait, then 10 of level 1 arrive behind them.
        var calls = Enumerable.Range(0, 33).Select(i => processor.ProcessAsync(i, new RequestOptions(0)).AsTask()).ToList();
        calls.AddRange(Enumerable.Range(0, 10).Select(i => processor.ProcessAsync(LevelBase + i, new RequestOptions(1)).AsTask()));
        Assert.Equal(40, processor.WaitingForSpace);

        handler.Release(gate);
        await Task.WhenAll(calls).WithinBoundAsync();
        await first;

        // Strict FIFO admission would keep level 1 out for 11 batches; the fair share lets it in from the second.
        int[][] batches = [.. handler.Calls.Skip(1).Select(c => c.Inputs)];
        int firstWithLevel1 = Array.FindIndex(batches, b => b.Any(x => LevelOf(x) == 1));
        Assert.InRange(firstWithLevel1, 0, 2);
    }

    [Fact]
    public async Task MaxDelay_still_dispatches_a_lone_item_of_any_level()
    {
        var time = new FakeTimeProvider();
        var handler = new RecordingHandler(time);
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 8,
            MaxDelay = TimeSpan.FromMilliseconds(5),
            FlushPolicy = FlushPolicy.Size(8), // waits for a full batch, up to MaxDelay
            PriorityLevels = 3,
            TimeProvider = time,
        });

        ValueTask<int> call = processor.ProcessAsync(4, new RequestOptions(2));
        await Wait.UntilIdleAsync(processor);
        Assert.Empty(handler.Calls);

        time.Advance(TimeSpan.FromMilliseconds(5));
        Assert.Equal(9, await call.WithinBoundAsync());
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(2)]
    [InlineData(int.MaxValue)]
    public async Task A_priority_outside_the_levels_fails_that_call_only_naming_the_argument(int priority)
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { PriorityLevels = 2 });

        ValueTask<int> single = processor.ProcessAsync(1, new RequestOptions(priority));
        ValueTask many = processor.ProcessManyAsync(new[] { 1, 2 }, new int[2], new RequestOptions(priority));

        var error = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => single.AsTask());
        Assert.Equal("options", error.ParamName);
        Assert.Contains("RequestOptions.Priority must be between 0 and 1", error.Message, StringComparison.Ordinal);
        Assert.Equal("options", (await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => many.AsTask())).ParamName);
        Assert.Equal(5, await processor.ProcessAsync(2, new RequestOptions(1)).WithinBoundAsync());
        Assert.Equal([2], handler.AllInputs);
    }
}
