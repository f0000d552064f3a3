using System.Diagnostics;
using Batching.Samples.EmbeddingService.Model;
using Microsoft.Extensions.AI;

namespace Batching.Benchmarks.Embeddings;

/// <summary>One closed-loop measurement: its throughput, latency percentiles and the shape of the model runs.</summary>
internal sealed record Result(double SentencesPerSecond, double P50Ms, double P99Ms, long Completed, double MeanBatch, double MeanRun, double PaddingShare);

/// <summary>Counts the calls that reach the model's generator and the sentences they carry; the model counts its runs and padding.</summary>
internal sealed class RunCounter(IEmbeddingGenerator<string, Embedding<float>> inner, MiniLmModel model)
    : DelegatingEmbeddingGenerator<string, Embedding<float>>(inner)
{
    private long _calls;
    private long _values;

    public (long Calls, long Values, long Runs, long Tokens, long Padded) Read()
    {
        (long runs, long tokens, long padded) = model.Counters;
        return (Interlocked.Read(ref _calls), Interlocked.Read(ref _values), runs, tokens, padded);
    }

    public override Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        string[] texts = [.. values];
        Interlocked.Increment(ref _calls);
        Interlocked.Add(ref _values, texts.Length);
        return base.GenerateAsync(texts, options, cancellationToken);
    }
}

internal static class Measure
{
    /// <summary>
    /// <paramref name="callers"/> callers, each on its own task, embed one sentence per call in a loop for
    /// <paramref name="warmup"/> and then <paramref name="duration"/>; only calls that end inside the measured window count.
    /// </summary>
    public static async Task<Result> ClosedLoopAsync(IEmbeddingGenerator<string, Embedding<float>> generator, RunCounter counter, string[] corpus,
        int callers, TimeSpan warmup, TimeSpan duration)
    {
        long next = -1;
        long windowStart = long.MaxValue;
        long windowEnd = long.MaxValue;
        using var stop = new CancellationTokenSource();
        Task<List<double>>[] tasks = [.. Enumerable.Range(0, callers).Select(_ => Task.Run(async () =>
        {
            var latencies = new List<double>(4096);
            while (!stop.IsCancellationRequested)
            {
                string sentence = corpus[(int)(Interlocked.Increment(ref next) % corpus.Length)];
                long start = Stopwatch.GetTimestamp();
                GeneratedEmbeddings<Embedding<float>> result = await generator.GenerateAsync([sentence]).ConfigureAwait(false);
                long end = Stopwatch.GetTimestamp();
                if (result.Count != 1 || result[0].Vector.Length != MiniLmModel.Dimensions)
                {
                    throw new InvalidOperationException("A caller got the wrong number of embeddings back.");
                }

                if (end >= Volatile.Read(ref windowStart) && end <= Volatile.Read(ref windowEnd))
                {
                    latencies.Add(Stopwatch.GetElapsedTime(start, end).TotalMilliseconds);
                }
            }

            return latencies;
        }))];

        await Task.Delay(warmup);
        var before = counter.Read();
        Volatile.Write(ref windowStart, Stopwatch.GetTimestamp());
        await Task.Delay(duration);
        long endStamp = Stopwatch.GetTimestamp();
        Volatile.Write(ref windowEnd, endStamp);
        var after = counter.Read();
        await stop.CancelAsync();
        List<double>[] lists = await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromMinutes(2));

        double[] all = [.. lists.SelectMany(l => l)];
        Array.Sort(all);
        double seconds = Stopwatch.GetElapsedTime(windowStart, endStamp).TotalSeconds;
        long calls = after.Calls - before.Calls;
        long values = after.Values - before.Values;
        long runs = after.Runs - before.Runs;
        long tokens = after.Tokens - before.Tokens;
        long padded = after.Padded - before.Padded;
        return new Result(all.Length / seconds, Percentile(all, 0.50), Percentile(all, 0.99), all.Length,
            calls == 0 ? 0 : (double)values / calls, runs == 0 ? 0 : (double)values / runs, padded == 0 ? 0 : 1 - ((double)tokens / padded));
    }

    private static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
}
