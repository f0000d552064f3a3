using Batching.Tests.TestSupport;

namespace Batching.Tests;

/// <summary>Real threads, real time, bounded in seconds: the accounting must balance and nobody may hang.</summary>
public class StressTests
{
    public static TheoryData<string, int> Policies => new()
    {
        { "deadline", 1 }, { "size", 1 }, { "adaptive", 1 }, { "adaptive", 3 }, { "deadline", 2 },
    };

    [Theory]
    [MemberData(nameof(Policies))]
    public async Task Many_producers_with_random_cancellations_balance_the_books(string policy, int maxConcurrentBatches)
    {
        const int Producers = 8, PerProducer = 6_000;
        int handled = 0;
        BatchHandler<int, long> handler = async (inputs, outputs, token) =>
        {
            if ((inputs.Span[0] & 7) == 0)
            {
                await Task.Yield();
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = inputs.Span[i] * 3L;
            }

            Interlocked.Add(ref handled, inputs.Length);
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions
        {
            MaxBatchSize = 64,
            QueueCapacity = 256,
            MaxConcurrentBatches = maxConcurrentBatches,
            MaxDelay = TimeSpan.FromMilliseconds(1),
            FlushPolicy = policy switch { "size" => FlushPolicy.Size(16, 32), "adaptive" => FlushPolicy.Adaptive(), _ => FlushPolicy.Deadline },
        });

        int succeeded = 0, cancelled = 0;
        var producers = Enumerable.Range(0, Producers).Select(p => Task.Run(async () =>
        {
            var random = new Random(p);
            var inFlight = new List<(int Input, Task<long> Call, CancellationTokenSource? Cts)>();
            for (int i = 0; i < PerProducer; i++)
            {
                int input = p * PerProducer + i;
                CancellationTokenSource? cts = random.Next(10) == 0 ? new CancellationTokenSource() : null;
                inFlight.Add((input, processor.ProcessAsync(input, cts?.Token ?? default).AsTask(), cts));
                if (cts is not null && random.Next(2) == 0)
                {
                    cts.Cancel();
                }

                if (inFlight.Count == 32)
                {
                    foreach (var (_, _, c) in inFlight)
                    {
                        c?.Cancel();
                    }

                    foreach (var (expected, call, _) in inFlight)
                    {
                        try
                        {
                            Assert.Equal(expected * 3L, await call.WaitAsync(Wait.Bound));
                            Interlocked.Increment(ref succeeded);
                        }
                        catch (OperationCanceledException)
                        {
                            Interlocked.Increment(ref cancelled);
                        }
                    }

                    inFlight.Clear();
                }
            }

            foreach (var (expected, call, _) in inFlight)
            {
                try
                {
                    Assert.Equal(expected * 3L, await call.WaitAsync(Wait.Bound));
                    Interlocked.Increment(ref succeeded);
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref cancelled);
                }
            }
        })).ToArray();

        await Task.WhenAll(producers).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(Producers * PerProducer, succeeded + cancelled);
        Assert.True(handled >= succeeded, $"handled {handled} < succeeded {succeeded}");
        Assert.True(cancelled > 0);
    }
}
