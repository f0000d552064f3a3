using Batching.Extensions.AI.Internal;
using Microsoft.Extensions.AI;

namespace Batching.Extensions.AI.Tests;

internal static class TestSupport
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    public static IEmbeddingGenerator<string, Embedding<float>> Batched(RecordingGenerator inner, Action<BatchingOptions>? configure = null) =>
        new EmbeddingGeneratorBuilder<string, Embedding<float>>(inner).UseBatching(configure).Build();

    public static BatchingEmbeddingGenerator<string, Embedding<float>> Middleware(IEmbeddingGenerator<string, Embedding<float>> generator) =>
        generator.GetRequiredService<BatchingEmbeddingGenerator<string, Embedding<float>>>();

    /// <summary>Waits (bounded) until the partitions of <paramref name="generator"/> hold <paramref name="items"/> queued items.</summary>
    public static async Task WaitQueuedAsync(IEmbeddingGenerator<string, Embedding<float>> generator, int items)
    {
        BatchingEmbeddingGenerator<string, Embedding<float>> middleware = Middleware(generator);
        using var timeout = new CancellationTokenSource(Patience);
        while (middleware.Partitions.Sum(p => p.Processor.GetLoad().QueuedItems) < items)
        {
            await Task.Delay(2, timeout.Token);
        }
    }

    /// <summary>Waits (bounded) until <paramref name="inner"/> has received <paramref name="calls"/> calls.</summary>
    public static async Task WaitCallsAsync(RecordingGenerator inner, int calls)
    {
        using var timeout = new CancellationTokenSource(Patience);
        while (inner.Calls.Count < calls)
        {
            await Task.Delay(2, timeout.Token);
        }
    }

    public static void AssertEmbeddings(IReadOnlyList<string> values, GeneratedEmbeddings<Embedding<float>> result)
    {
        Assert.Equal(values.Count, result.Count);
        for (int i = 0; i < values.Count; i++)
        {
            Assert.Equal(RecordingGenerator.Expected(values[i]), result[i].Vector.ToArray());
        }
    }
}
