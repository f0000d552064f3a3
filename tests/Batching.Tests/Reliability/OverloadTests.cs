using System.Diagnostics;

namespace Batching.Tests.Reliability;

/// <summary>Offered load about ten times what the handler can take, against a bounded queue, in both queue-full modes.</summary>
public class OverloadTests
{
    // Capacity: at most 10 items per >= 5 ms handler call, one slot: <= 2,000 items/s.
    private const int MaxBatch = 10, QueueCapacity = 50, Bursts = 20, BurstSize = 200;
    private static readonly TimeSpan BurstEvery = TimeSpan.FromMilliseconds(10); // 20,000 items/s offered

    [Fact]
    public async Task Reject_mode_rejects_the_excess_at_once_and_serves_what_it_admits()
    {
        var (handler, processor) = Create(QueueFullMode.Reject);
        await using (processor)
        {
            var ledger = new Ledger("overload, Reject");
            int refusedSynchronously = 0;
            int maxQueued = await OfferAsync(processor, (input, burst) =>
            {
                ValueTask<int> call = processor.ProcessAsync(input);
                if (call.IsFaulted)
                {
                    refusedSynchronously++;
                }

                _ = ledger.Track(input, call);
            });

            LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
            Assert.Equal(Bursts * BurstSize, report.Submitted);
            Assert.Equal(0, report.Failed + report.Cancelled);
            Assert.True(report.Rejected > BurstSize, $"only {report.Rejected} of {report.Submitted} rejected at 10x load");
            Assert.True(report.Succeeded >= QueueCapacity, $"only {report.Succeeded} served");
            Assert.Equal(report.Rejected, refusedSynchronously); // a rejection never makes the caller wait
            Assert.All(ledger.Inputs(Outcome.Rejected), x => Assert.IsType<BatchQueueFullException>(ledger.Errors[x]));
            Assert.InRange(maxQueued, 1, QueueCapacity);
            await Reliably.StillServesAsync(processor, handler);
        }
    }

    [Fact]
    public async Task Wait_mode_holds_the_excess_outside_the_bounded_queue_until_served_or_given_up()
    {
        var (handler, processor) = Create(QueueFullMode.Wait);
        await using (processor)
        {
            var ledger = new Ledger("overload, Wait");
            var deadlines = new List<CancellationTokenSource>();
            int maxWaiting = 0;
            int maxQueued = await OfferAsync(processor, (input, burst) =>
            {
                // Half the callers give up after 200 ms, as a client with a deadline would; the rest wait it out.
                CancellationToken token = default;
                if (input % 2 == 1)
                {
                    var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
                    deadlines.Add(cts);
                    token = cts.Token;
                }

                _ = ledger.Submit(processor, input, token);
                maxWaiting = Math.Max(maxWaiting, Reliably.WaitingForSpace(processor));
            });

            LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
            Assert.Equal(Bursts * BurstSize, report.Submitted);
            Assert.Equal(0, report.Failed + report.Rejected);
            Assert.All(ledger.Outcomes.Where(e => e.Key % 2 == 0), e => Assert.Equal(Outcome.Succeeded, e.Value));
            Assert.True(report.Cancelled > 0, "no caller ran out of its deadline at 10x load");
            Assert.True(maxWaiting >= QueueCapacity, $"at most {maxWaiting} callers waited for space at 10x load");
            Assert.InRange(maxQueued, 1, QueueCapacity);
            deadlines.ForEach(d => d.Dispose());
            await Reliably.StillServesAsync(processor, handler);
        }
    }

    private static (FaultyHandler, IBatchProcessor<int, int>) Create(QueueFullMode mode)
    {
        var handler = new FaultyHandler { WorkTime = TimeSpan.FromMilliseconds(5) };
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = MaxBatch,
            QueueCapacity = QueueCapacity,
            QueueFullMode = mode,
            MaxDelay = TimeSpan.FromMilliseconds(1),
        });
        return (handler, processor);
    }

    /// <summary>Offers the bursts on a fixed schedule while sampling the queue; returns the deepest queue seen.</summary>
    private static async Task<int> OfferAsync(IBatchProcessor<int, int> processor, Action<int, int> call)
    {
        int maxQueued = 0;
        using var done = new CancellationTokenSource();
        Task sampler = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                maxQueued = Math.Max(maxQueued, Reliably.QueuedItems(processor));
                await Task.Yield();
            }
        });

        var clock = Stopwatch.StartNew();
        for (int burst = 0; burst < Bursts; burst++)
        {
            for (int i = 0; i < BurstSize; i++)
            {
                call(burst * BurstSize + i, burst);
                maxQueued = Math.Max(maxQueued, Reliably.QueuedItems(processor));
            }

            TimeSpan next = BurstEvery * (burst + 1) - clock.Elapsed;
            if (next > TimeSpan.Zero)
            {
                await Task.Delay(next);
            }
        }

        await done.CancelAsync();
        await sampler;
        return maxQueued;
    }
}
