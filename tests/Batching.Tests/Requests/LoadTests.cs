using System.Diagnostics;
using Batching.Tests.TestSupport;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Xunit.Abstractions;

namespace Batching.Tests.Requests;

[Collection(nameof(Serial))]
public class LoadTests(ITestOutputHelper output)
{
    [Fact]
    public async Task GetLoad_counts_what_the_processor_holds()
    {
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 2,
            QueueCapacity = 6,
            PriorityLevels = 3,
            MaxConcurrentBatches = 2,
        });
        Task[] running = [processor.ProcessAsync(0).AsTask(), processor.ProcessManyAsync(new[] { 1, 2 }, new int[2]).AsTask()];
        await Wait.UntilAsync(() => handler.Calls.Count == 2, "both slots run");
        Task[] queued =
        [
            processor.ProcessAsync(3, new RequestOptions(1)).AsTask(),
            processor.ProcessManyAsync(new[] { 4, 5, 6, 7 }, new int[4], new RequestOptions(2)).AsTask(),
            processor.ProcessManyAsync(new[] { 8, 9, 10 }, new int[3], new RequestOptions(0)).AsTask(), // 1 fits, 2 wait
        ];

        ProcessorLoad load = processor.GetLoad();

        Assert.Equal(3, load.PriorityLevels);
        Assert.Equal(6, load.QueuedItems);
        Assert.Equal([1, 1, 4], Enumerable.Range(0, 3).Select(load.GetQueuedItems));
        Assert.Equal(2, load.WaitingItems);
        Assert.Equal(2, load.BatchesInFlight);
        Assert.Equal(2, load.Slots);
        Assert.Equal(6, load.QueueCapacity);
        Assert.True(load.IsAccepting);
        Assert.Throws<ArgumentOutOfRangeException>(() => load.GetQueuedItems(3));
        Assert.Contains("queued=6", load.ToString(), StringComparison.Ordinal);

        var health = ((IBatchingHealthContributor)processor).CheckHealth();
        Assert.Equal(HealthStatus.Degraded, health.Status);
        Assert.Equal(new[] { 1, 1, 4 }, health.Data["queued_by_priority"]);
        Assert.Equal(2, health.Data["waiting_for_space"]);
        Assert.True(health.Data.ContainsKey("estimated_wait_ms"));

        handler.Release(gate);
        await Task.WhenAll(running.Concat(queued)).WithinBoundAsync();
        await processor.DisposeAsync();
        Assert.False(processor.GetLoad().IsAccepting);
        Assert.Equal(0, processor.GetLoad().QueuedItems);
    }

    [Fact]
    public async Task GetLoad_allocates_nothing()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { PriorityLevels = 4 });
        await processor.ProcessAsync(1).WithinBoundAsync(); // the cost model has a batch to go by
        _ = processor.GetLoad();

        long before = GC.GetAllocatedBytesForCurrentThread();
        long sum = 0;
        for (int i = 0; i < 1000; i++)
        {
            ProcessorLoad load = processor.GetLoad();
            sum += load.QueuedItems + load.GetQueuedItems(3) + load.EstimatedWait.Ticks;
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.True(sum >= 0);
    }

    /// <summary>
    /// A steady closed loop: 30 callers, MaxBatchSize 10, one slot, a handler that costs 6 ms + 0.2 ms per item. Each
    /// caller reads <see cref="IBatchProcessor{TIn, TOut}.GetLoad"/> just before its call and the handler reports when
    /// the item's batch started: the estimate must be within a factor of 2 of the wait measured (median over the run).
    /// </summary>
    [Fact]
    [Trait("Category", "RealTime")]
    public async Task EstimatedWait_is_within_a_factor_of_2_of_the_measured_wait_in_a_steady_closed_loop()
    {
        await using var processor = BatchProcessor.Create<int, long>(async (inputs, outputs, token) =>
        {
            long started = Stopwatch.GetTimestamp();
            outputs.Span.Fill(started);
            await Spin(TimeSpan.FromMilliseconds(6 + 0.2 * inputs.Length), token);
        }, new BatchingOptions { MaxBatchSize = 10, QueueCapacity = 100 });

        var ratios = new List<double>();
        var stopAt = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 2;
        int batchesSeen = 0;
        await Task.WhenAll(Enumerable.Range(0, 30).Select(c => Task.Run(async () =>
        {
            for (int round = 0; round < 200 && Stopwatch.GetTimestamp() < stopAt; round++)
            {
                ProcessorLoad load = processor.GetLoad();
                long called = Stopwatch.GetTimestamp();
                long started = await processor.ProcessAsync(c);
                double measured = Stopwatch.GetElapsedTime(called, started).TotalMilliseconds;
                if (Interlocked.Increment(ref batchesSeen) > 300 && measured > 1)
                {
                    lock (ratios)
                    {
                        ratios.Add(load.EstimatedWait.TotalMilliseconds / measured);
                    }
                }
            }
        }))).WithinBoundAsync();

        Assert.True(ratios.Count > 50, $"only {ratios.Count} samples");
        ratios.Sort();
        double median = ratios[ratios.Count / 2];
        output.WriteLine($"estimate/measured: median {median:0.00}, p10 {ratios[ratios.Count / 10]:0.00}, p90 {ratios[ratios.Count * 9 / 10]:0.00}, {ratios.Count} samples");
        Assert.True(median is >= 0.5 and <= 2.0, $"median estimate/measured {median:0.00} over {ratios.Count} samples (p10 {ratios[ratios.Count / 10]:0.00}, p90 {ratios[ratios.Count * 9 / 10]:0.00})");
    }

    private static async Task Spin(TimeSpan cost, CancellationToken token)
    {
        // Task.Delay alone overshoots by up to a timer tick; sleep most of it, then wait out the rest precisely.
        long end = Stopwatch.GetTimestamp() + (long)(cost.TotalSeconds * Stopwatch.Frequency);
        if (cost > TimeSpan.FromMilliseconds(3))
        {
            await Task.Delay(cost - TimeSpan.FromMilliseconds(2), token);
        }

        while (Stopwatch.GetTimestamp() < end)
        {
            Thread.SpinWait(100);
        }
    }
}
