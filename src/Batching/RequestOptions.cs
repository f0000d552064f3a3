namespace Batching;

/// <summary>How one call is scheduled: its priority level and how long it may wait in the queue.</summary>
/// <remarks>The default value (<c>default(RequestOptions)</c> or <c>new RequestOptions()</c>) is priority 0 with no
/// timeout, what <see cref="IBatchProcessor{TIn, TOut}.ProcessAsync(TIn, CancellationToken)"/> uses.</remarks>
public readonly record struct RequestOptions
{
    // Stored as ticks XOR the ticks of Timeout.InfiniteTimeSpan, so that the default field (0) reads as infinite and
    // equality treats "left unset" and "set to infinite" alike.
    private const long InfiniteTicks = -TimeSpan.TicksPerMillisecond;
    private readonly long _timeoutBits;

    /// <summary>Options with <paramref name="priority"/> and no timeout.</summary>
    /// <param name="priority">The priority level; 0 is the most urgent.</param>
    public RequestOptions(int priority)
    {
        Priority = priority;
    }

    /// <summary>Options with <paramref name="priority"/> and <paramref name="timeout"/>.</summary>
    /// <param name="priority">The priority level; 0 is the most urgent.</param>
    /// <param name="timeout">How long the call's items may wait before their batch is dispatched.</param>
    public RequestOptions(int priority, TimeSpan timeout)
    {
        Priority = priority;
        Timeout = timeout;
    }

    /// <summary>
    /// The priority level: 0 (the default) is the most urgent. Levels share the batches by weight (see
    /// <see cref="BatchingOptions.PriorityWeights"/>); within a level, items go first in, first out.
    /// </summary>
    /// <value>Default: 0. Allowed: 0 to <see cref="BatchingOptions.PriorityLevels"/> - 1.</value>
    public int Priority { get; init; }

    /// <summary>
    /// How long the call's items may wait, from the moment of the call, before their batch is dispatched. An item still
    /// queued (or waiting for queue space) when it expires is removed and never reaches the handler; its caller receives
    /// <see cref="TimeoutException"/>. An item already dispatched finishes normally (its batch is bounded by
    /// <see cref="BatchingOptions.ExecutionTimeout"/>). Measured on the processor's <see cref="TimeProvider"/>.
    /// </summary>
    /// <value>Default: <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> (no timeout). Allowed: <see cref="TimeSpan.Zero"/>
    /// (the call fails at once with <see cref="TimeoutException"/>, never queued) or more, or <see cref="System.Threading.Timeout.InfiniteTimeSpan"/>.</value>
    public TimeSpan Timeout
    {
        get => new(_timeoutBits ^ InfiniteTicks);
        init => _timeoutBits = value.Ticks ^ InfiniteTicks;
    }
}
