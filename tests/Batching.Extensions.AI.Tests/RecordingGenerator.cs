using System.Collections.Concurrent;
using Microsoft.Extensions.AI;

namespace Batching.Extensions.AI.Tests;

/// <summary>One call the fake inner generator received.</summary>
internal sealed record InnerCall(string[] Values, EmbeddingGenerationOptions? Options);

/// <summary>
/// A fake inner generator that records every call. The embedding of "v" is [v.Length, hash(v)], so a test can check
/// which embedding a caller got; usage is one input token per character. A value starting with "poison" fails the call.
/// With <see cref="Hold"/> the calls wait at a gate until <see cref="Release"/>.
/// </summary>
internal sealed class RecordingGenerator : IEmbeddingGenerator<string, Embedding<float>>
{
    private readonly ConcurrentQueue<InnerCall> _calls = new();
    private TaskCompletionSource _gate = CompletedGate();
    private TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public bool ReportUsage { get; set; } = true;

    /// <summary>Returns this many embeddings instead of one per value, when set.</summary>
    public int? WrongCount { get; set; }

    public IReadOnlyList<InnerCall> Calls => [.. _calls];

    public bool Disposed { get; private set; }

    public static float[] Expected(string value) => [value.Length, StringComparer.Ordinal.GetHashCode(value)];

    /// <summary>Makes the next calls wait until <see cref="Release"/>.</summary>
    public void Hold()
    {
        _gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public void Release() => _gate.TrySetResult();

    /// <summary>Completes once a call has entered the generator since <see cref="Hold"/>.</summary>
    public Task Entered => _entered.Task;

    public async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        string[] batch = [.. values];
        _calls.Enqueue(new InnerCall(batch, options));
        _entered.TrySetResult();
        await _gate.Task.WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
        if (batch.FirstOrDefault(v => v.StartsWith("poison", StringComparison.Ordinal)) is { } poison)
        {
            throw new InvalidOperationException($"inner failed on '{poison}'");
        }

        int count = WrongCount ?? batch.Length;
        var result = new GeneratedEmbeddings<Embedding<float>>(batch.Take(count).Select(v => new Embedding<float>(Expected(v))));
        if (ReportUsage)
        {
            long tokens = batch.Sum(v => (long)v.Length);
            result.Usage = new UsageDetails { InputTokenCount = tokens, TotalTokenCount = tokens, AdditionalCounts = new() { ["calls"] = 1 } };
        }

        return result;
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceType == typeof(EmbeddingGeneratorMetadata) ? new EmbeddingGeneratorMetadata("fake", null, "fake-model", 2)
        : serviceType.IsInstanceOfType(this) ? this : null;

    public void Dispose() => Disposed = true;

    private static TaskCompletionSource CompletedGate()
    {
        var gate = new TaskCompletionSource();
        gate.SetResult();
        return gate;
    }
}
