namespace Batching;

/// <summary>Settings of one generation processor (<see cref="GenerationProcessor"/>). Validated when the processor is built.</summary>
public sealed class GenerationOptions
{
    /// <summary>The default of <see cref="MaxSequences"/>: 64.</summary>
    public const int DefaultMaxSequences = 64;

    /// <summary>The default of <see cref="QueueCapacity"/>: 1,024.</summary>
    public const int DefaultQueueCapacity = 1024;

    /// <summary>The default of <see cref="MaxTokensPerSequence"/>: 1,024.</summary>
    public const int DefaultMaxTokensPerSequence = 1024;

    /// <summary>The default of <see cref="MaxBufferedTokens"/>: 64.</summary>
    public const int DefaultMaxBufferedTokens = 64;

    /// <summary>The default of <see cref="StepTimeout"/>: 30 s.</summary>
    public static readonly TimeSpan DefaultStepTimeout = TimeSpan.FromSeconds(30);

    /// <summary>The default of <see cref="ShutdownTimeout"/>: 30 s.</summary>
    public static readonly TimeSpan DefaultShutdownTimeout = TimeSpan.FromSeconds(30);

    /// <summary>The largest value <see cref="MaxSequences"/>, <see cref="QueueCapacity"/> and <see cref="MaxBufferedTokens"/> accept: 1,048,576.</summary>
    public const int MaxCount = 1 << 20;

    /// <summary>A name for logs, metrics and error messages. Dependency injection sets it to the processor's key.</summary>
    /// <value>Default: <see langword="null"/>.</value>
    public string? Name { get; set; }

    /// <summary>The most sequences active at once (in the batch, stepping or parked).</summary>
    /// <value>Default: 64. Allowed: 1 to <see cref="MaxCount"/>.</value>
    public int MaxSequences { get; set; } = DefaultMaxSequences;

    /// <summary>The most sequences waiting to join the batch.</summary>
    /// <value>Default: 1,024. Allowed: 1 to <see cref="MaxCount"/>.</value>
    public int QueueCapacity { get; set; } = DefaultQueueCapacity;

    /// <summary>What a new sequence does when <see cref="QueueCapacity"/> sequences wait: wait in its lane (cancellable),
    /// or fail with <see cref="BatchQueueFullException"/> from its first <c>MoveNextAsync</c>.</summary>
    /// <value>Default: <see cref="Batching.QueueFullMode.Wait"/>.</value>
    public QueueFullMode QueueFullMode { get; set; } = QueueFullMode.Wait;

    /// <summary>The most tokens one sequence generates; its enumeration completes after the last one even if the step never marked it finished.</summary>
    /// <value>Default: 1,024. Allowed: 1 to <see cref="int.MaxValue"/>.</value>
    public int MaxTokensPerSequence { get; set; } = DefaultMaxTokensPerSequence;

    /// <summary>How long one step may run. Past it, the step's token is cancelled, every sequence in it fails with
    /// <see cref="TimeoutException"/>, and the engine goes on with the others (a step that ignores its token keeps its
    /// buffers; the next step gets new ones).</summary>
    /// <value>Default: 30 s. Allowed: more than zero, or <see cref="Timeout.InfiniteTimeSpan"/>.</value>
    public TimeSpan StepTimeout { get; set; } = DefaultStepTimeout;

    /// <summary>The most tokens waiting, unread, for one sequence's consumer. A sequence that has this many is parked
    /// (left out of steps, keeping its place in the batch) until its consumer reads one, so a slow client costs no device
    /// time and its memory stays bounded.</summary>
    /// <value>Default: 64. Allowed: 1 to <see cref="MaxCount"/>.</value>
    public int MaxBufferedTokens { get; set; } = DefaultMaxBufferedTokens;

    /// <summary>
    /// The admission weight of a sequence, from its state (for example its prompt length plus
    /// <see cref="MaxTokensPerSequence"/>, a KV-cache budget in tokens): a <c>Func&lt;TState, int&gt;</c> for the
    /// processor's state type. When set, a sequence joins only while the active sequences' total weight stays within
    /// <see cref="MaxActiveWeight"/>; a sequence heavier than MaxActiveWeight fails alone with <see cref="ArgumentException"/>.
    /// Called once per sequence, on the consumer's thread, when its enumeration starts.
    /// </summary>
    /// <value>Default: <see langword="null"/> (bounded by <see cref="MaxSequences"/> only). Set together with <see cref="MaxActiveWeight"/>.</value>
    public Delegate? SequenceWeight { get; set; }

    /// <summary>The most total <see cref="SequenceWeight"/> of the active sequences.</summary>
    /// <value>Default: 0 (unused). Allowed: 1 to <see cref="int.MaxValue"/> when <see cref="SequenceWeight"/> is set; 0 when it is not.</value>
    public int MaxActiveWeight { get; set; }

    /// <summary>How many priority levels requests may use (<see cref="RequestOptions.Priority"/>); each is a FIFO lane.</summary>
    /// <value>Default: 1. Allowed: 1 to <see cref="BatchingOptions.MaxPriorityLevels"/>.</value>
    public int PriorityLevels { get; set; } = 1;

    /// <summary>Each level's share of the sequences admitted while several levels wait: the same deficit round robin as
    /// <see cref="BatchingOptions.PriorityWeights"/>, counted in sequences.</summary>
    /// <value>Default: <see langword="null"/>: each level twice the share of the next. Allowed: exactly
    /// <see cref="PriorityLevels"/> weights, each 1 to <see cref="BatchingOptions.MaxPriorityWeight"/>.</value>
    public IReadOnlyList<int>? PriorityWeights { get; set; }

    /// <summary>How long <see cref="IAsyncDisposable.DisposeAsync"/> lets queued and active sequences finish before it fails the rest.</summary>
    /// <value>Default: 30 s. Allowed: zero or more, or <see cref="Timeout.InfiniteTimeSpan"/>.</value>
    public TimeSpan ShutdownTimeout { get; set; } = DefaultShutdownTimeout;

    /// <summary>The clock for timeouts and latency measurements. <see langword="null"/> uses the container's, else <see cref="TimeProvider.System"/>.</summary>
    /// <value>Default: <see langword="null"/>.</value>
    public TimeProvider? TimeProvider { get; set; }

    /// <summary>Checks every setting and throws for the first one out of range.</summary>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public void Validate()
    {
        Require(MaxSequences is >= 1 and <= MaxCount, nameof(MaxSequences), $"must be between 1 and {MaxCount}", MaxSequences);
        Require(QueueCapacity is >= 1 and <= MaxCount, nameof(QueueCapacity), $"must be between 1 and {MaxCount}", QueueCapacity);
        Require(Enum.IsDefined(QueueFullMode), nameof(QueueFullMode), "must be Wait or Reject", QueueFullMode);
        Require(MaxTokensPerSequence >= 1, nameof(MaxTokensPerSequence), "must be at least 1", MaxTokensPerSequence);
        Require(StepTimeout > TimeSpan.Zero || StepTimeout == Timeout.InfiniteTimeSpan, nameof(StepTimeout), "must be more than zero, or Timeout.InfiniteTimeSpan", StepTimeout);
        Require(MaxBufferedTokens is >= 1 and <= MaxCount, nameof(MaxBufferedTokens), $"must be between 1 and {MaxCount}", MaxBufferedTokens);
        Require(SequenceWeight is not null || MaxActiveWeight == 0, nameof(MaxActiveWeight), "must be 0 unless SequenceWeight is set", MaxActiveWeight);
        Require(SequenceWeight is null || MaxActiveWeight >= 1, nameof(MaxActiveWeight), "must be at least 1 when SequenceWeight is set", MaxActiveWeight);
        Require(SequenceWeight is null || (SequenceWeight.GetType().IsGenericType && SequenceWeight.GetType().GetGenericTypeDefinition() == typeof(Func<,>)
            && SequenceWeight.GetType().GetGenericArguments()[1] == typeof(int)), nameof(SequenceWeight), "must be a Func<TState, int>", SequenceWeight?.GetType().ToString() ?? "null");
        Require(PriorityLevels is >= 1 and <= BatchingOptions.MaxPriorityLevels, nameof(PriorityLevels), $"must be between 1 and {BatchingOptions.MaxPriorityLevels}", PriorityLevels);
        if (PriorityWeights is { } weights)
        {
            Require(weights.Count == PriorityLevels, nameof(PriorityWeights), $"must hold one weight per priority level ({PriorityLevels})", $"{weights.Count} weight(s)");
            for (int i = 0; i < weights.Count; i++)
            {
                Require(weights[i] is >= 1 and <= BatchingOptions.MaxPriorityWeight, nameof(PriorityWeights), $"[{i}] must be between 1 and {BatchingOptions.MaxPriorityWeight}", weights[i]);
            }
        }

        Require(ShutdownTimeout >= TimeSpan.Zero || ShutdownTimeout == Timeout.InfiniteTimeSpan, nameof(ShutdownTimeout), "must be zero or more, or Timeout.InfiniteTimeSpan", ShutdownTimeout);
    }

    /// <summary>Returns a shallow copy. Processors copy their options when built.</summary>
    /// <returns>A new options object with the same settings.</returns>
    public GenerationOptions Clone() => (GenerationOptions)MemberwiseClone();

    internal int[] ResolvePriorityWeights()
    {
        var weights = new int[PriorityLevels];
        for (int i = 0; i < weights.Length; i++)
        {
            weights[i] = PriorityWeights?[i] ?? 1 << (PriorityLevels - 1 - i);
        }

        return weights;
    }

    internal Func<TState, int>? ResolveSequenceWeight<TState>() => SequenceWeight switch
    {
        null => null,
        Func<TState, int> weight => weight,
        _ => throw new ArgumentException($"GenerationOptions.SequenceWeight must be a Func<{typeof(TState).Name}, int> for this processor's state type; it was {SequenceWeight.GetType()}.", nameof(SequenceWeight)),
    };

    private static void Require(bool condition, string setting, string rule, object value)
    {
        if (!condition)
        {
            throw new ArgumentException($"GenerationOptions.{setting} {rule}; it was {value}.", setting);
        }
    }
}
