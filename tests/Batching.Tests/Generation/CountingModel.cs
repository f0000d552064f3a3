using System.Collections.Concurrent;

namespace Batching.Tests.Generation;

/// <summary>A sequence's state in the counting model: its id, how long it runs, how far it got.</summary>
public struct CountingState
{
    public int Id;
    public int Length;
    public int Produced;
}

/// <summary>
/// A step model that records every step (the ids in it, in order) and writes token <c>Id * 100_000 + index</c>, so a
/// consumer can check it got its own tokens, in order, each once; a sequence finishes after <c>Length</c> tokens.
/// <see cref="BeforeStep"/> lets a test make a step fail, block or wait.
/// </summary>
public sealed class CountingModel
{
    private int _steps;

    public ConcurrentDictionary<int, int[]> Steps { get; } = new();

    /// <summary>Called with the step's index and ids before the tokens are written; may throw or block.</summary>
    public Action<int, int[]>? BeforeStep { get; set; }

    /// <summary>Steps started so far.</summary>
    public int StepsStarted => Volatile.Read(ref _steps);

    public static int TokenOf(int id, int index) => id * 100_000 + index;

    public static CountingState Start((int Id, int Length) prompt) => new() { Id = prompt.Id, Length = prompt.Length };

    public ValueTask Step(Memory<CountingState> states, Memory<int> tokens, Memory<bool> finished, CancellationToken cancellationToken)
    {
        int index = Interlocked.Increment(ref _steps) - 1;
        Span<CountingState> s = states.Span;
        var ids = new int[s.Length];
        for (int i = 0; i < s.Length; i++)
        {
            ids[i] = s[i].Id;
        }

        Steps[index] = ids;
        BeforeStep?.Invoke(index, ids);
        Span<int> t = tokens.Span;
        Span<bool> f = finished.Span;
        for (int i = 0; i < s.Length; i++)
        {
            t[i] = TokenOf(s[i].Id, s[i].Produced);
            s[i].Produced++;
            f[i] = s[i].Produced >= s[i].Length;
        }

        return default;
    }

    public IGenerationProcessor<(int Id, int Length), int> Create(GenerationOptions? options = null) =>
        GenerationProcessor.Create<(int Id, int Length), CountingState, int>(Start, Step, options);

    /// <summary>The indexes of the steps that carried <paramref name="id"/>, ascending.</summary>
    public List<int> StepsOf(int id) => [.. Steps.Where(p => p.Value.Contains(id)).Select(p => p.Key).Order()];
}
