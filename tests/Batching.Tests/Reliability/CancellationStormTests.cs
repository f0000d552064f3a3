using System.Collections.Concurrent;

namespace Batching.Tests.Reliability;

/// <summary>Half of all callers cancel at random moments: before calling, while queued, and while their batch runs.</summary>
public class CancellationStormTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public async Task Cancellation_storm_releases_every_cancelled_caller_and_serves_every_other_one(int maxConcurrentBatches)
    {
        const int Producers = 4, PerProducer = 1500;
        var sources = new ConcurrentDictionary<int, CancellationTokenSource>();
        int cancelledInBatch = 0;
        var handler = new FaultyHandler
        {
            Plan = FaultyHandler.Random(seed: maxConcurrentBatches, pThrow: 0, pHang: 0, pPartial: 0, pSlow: 0.3),
            SlowFor = TimeSpan.FromMilliseconds(1),
        };

        // Inside the handler: cancel every third caller that asked to be cancelled "while running", so that case
        // happens for sure, not just by luck of timing.
        handler.OnCall = inputs =>
        {
            foreach (int input in inputs.Span)
            {
                if (input % 6 == 1 && sources.TryGetValue(input, out var cts) && !cts.IsCancellationRequested)
                {
                    cts.Cancel();
                    Interlocked.Increment(ref cancelledInBatch);
                }
            }
        };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 32,
            QueueCapacity = 512,
            MaxDelay = TimeSpan.FromMilliseconds(1),
            MaxConcurrentBatches = maxConcurrentBatches,
        });
        var ledger = new Ledger($"cancellation storm, {maxConcurrentBatches} slot(s)");

        await Task.WhenAll(Enumerable.Range(0, Producers).Select(p => Task.Run(async () =>
        {
            var random = new Random(p);
            for (int i = 0; i < PerProducer; i++)
            {
                int input = p * 100_000 + i;
                if (input % 2 == 0)
                {
                    _ = ledger.Submit(processor, input);
                    continue;
                }

                // Odd inputs (half of all callers) cancel: at once, in the handler, or after a random delay.
                var cts = new CancellationTokenSource();
                sources[input] = cts;
                switch (input % 6)
                {
                    case 3:
                        cts.Cancel();
                        break;
                    case 5:
                        cts.CancelAfter(random.Next(0, 4));
                        break;
                }

                _ = ledger.Submit(processor, input, cts.Token);
                if (input % 6 == 5 && random.Next(4) == 0)
                {
                    cts.Cancel(); // right after the call: races the enqueue and the dispatch
                }

                if (i % 100 == 0)
                {
                    await Task.Delay(1);
                }
            }
        })));

        // Callers cancelled "while running" whose batch never started in time are cancelled here, late.
        LedgerReport report = await ledger.SettleAsync(TimeSpan.FromSeconds(2));
        foreach (var cts in sources.Values)
        {
            cts.Cancel();
        }

        report = (await ledger.SettleAsync()).ThrowIfUnclean();
        Assert.Equal(Producers * PerProducer, report.Submitted);
        Assert.Equal(0, report.Failed + report.Rejected);
        Assert.All(ledger.Outcomes.Where(e => e.Key % 2 == 0), e => Assert.Equal(Outcome.Succeeded, e.Value));
        Assert.All(ledger.Outcomes.Where(e => e.Key % 6 == 3), e => Assert.Equal(Outcome.Cancelled, e.Value));
        Assert.True(cancelledInBatch > 0, "no caller was cancelled while its batch ran");

        // A batch run inline inside ProcessAsync may finish before the caller's token is even registered: then the
        // caller gets its output, which is as valid as the cancellation (the two raced).
        Assert.All(ledger.Outcomes.Where(e => e.Key % 6 == 1), e => Assert.True(e.Value is Outcome.Cancelled or Outcome.Succeeded, $"{e.Key}: {e.Value}"));
        Assert.True(ledger.Outcomes.Count(e => e.Key % 6 == 1 && e.Value == Outcome.Cancelled) > 0, "no caller cancelled while its batch ran saw the cancellation");
        Assert.All(handler.Calls.SelectMany(c => c.Inputs).Where(x => x % 6 == 3), x => Assert.Fail($"pre-cancelled input {x} reached the handler"));
        foreach (var cts in sources.Values)
        {
            cts.Dispose();
        }

        await Reliably.StillServesAsync(processor, handler);
    }
}
