using Batching.Policies;

namespace Batching;

/// <summary>
/// Decides when queued items become a batch. The processor asks only when a batch slot is free and at least one
/// item is queued, and always enforces the hard bounds itself: a batch never exceeds
/// <see cref="BatchingOptions.MaxBatchSize"/>, and once the oldest queued item has waited
/// <see cref="BatchingOptions.MaxDelay"/> its batch goes whatever the policy says.
/// </summary>
/// <remarks>
/// <para>Write your own policy by deriving from this class. The processor calls <see cref="Decide"/> and
/// <see cref="OnBatchCompleted"/> under its internal lock, one call at a time, so a policy needs no
/// synchronization of its own, but both calls must be quick and must not block: while they run, the processor's
/// callers wait for its lock. They run on that processor's own dispatcher or on the thread that finished a batch,
/// never on a thread shared with other processors, so a slow policy delays only its own processor. A policy that
/// throws is logged and treated as "dispatch now".</para>
/// <para>A policy that learns from completed batches keeps state: override <see cref="CreateInstance"/> to
/// return a fresh instance, so that processors built from the same options never share what they learned.</para>
/// </remarks>
public abstract class FlushPolicy
{
    /// <summary>Latency bound first: dispatch everything queued (up to <see cref="BatchingOptions.MaxBatchSize"/>) as soon as
    /// a full batch is queued or the oldest item has waited <see cref="BatchingOptions.MaxDelay"/>. Every partial batch
    /// waits out MaxDelay, even at idle.</summary>
    public static FlushPolicy Deadline { get; } = new DeadlineFlushPolicy();

    /// <summary>
    /// Throughput first: dispatch the largest batch the queue can fill among <see cref="BatchingOptions.MaxBatchSize"/>
    /// and <paramref name="preferredBatchSizes"/> (kernels often run best at fixed sizes such as 32 or 64). A queue
    /// that fills none of them waits, and goes as a partial batch only when its oldest item has waited
    /// <see cref="BatchingOptions.MaxDelay"/>.
    /// </summary>
    /// <param name="preferredBatchSizes">Batch sizes to prefer besides <see cref="BatchingOptions.MaxBatchSize"/>; each between 1 and MaxBatchSize.</param>
    /// <returns>The policy.</returns>
    public static FlushPolicy Size(params int[] preferredBatchSizes) => new SizeFlushPolicy(preferredBatchSizes ?? []);

    /// <summary>
    /// Adapts to load: no fixed wait at low load (a free slot takes what is queued at once), batches grow
    /// naturally under load while earlier batches run, and a partial batch is held only when an online model of
    /// the batch cost predicts that waiting raises throughput within <see cref="AdaptiveFlushOptions.LatencyTarget"/>.
    /// The default of <see cref="BatchingOptions.FlushPolicy"/>.
    /// </summary>
    /// <param name="options">Tuning; <see langword="null"/> for defaults.</param>
    /// <returns>The policy.</returns>
    public static FlushPolicy Adaptive(AdaptiveFlushOptions? options = null) => new AdaptiveFlushPolicy(options ?? new AdaptiveFlushOptions());

    /// <summary>A short name for logs, metrics and traces, such as "deadline".</summary>
    public virtual string Name => GetType().Name;

    /// <summary>Decides what to do with the queued items now.</summary>
    /// <param name="context">The queue's state.</param>
    /// <returns><see cref="FlushDecision.Dispatch"/> to form a batch now, or <see cref="FlushDecision.Wait"/> to be asked again later.</returns>
    public abstract FlushDecision Decide(in FlushContext context);

    /// <summary>Called after each handler call with its size and duration, for policies that learn the batch cost.</summary>
    /// <param name="batch">What happened.</param>
    public virtual void OnBatchCompleted(in BatchCompletion batch)
    {
    }

    /// <summary>Returns the instance one processor uses. Stateless policies return <see langword="this"/> (the default);
    /// stateful ones return a fresh copy.</summary>
    /// <returns>The policy instance for one processor.</returns>
    public virtual FlushPolicy CreateInstance() => this;

    /// <summary>Checks this policy against the processor's options when the processor is built.</summary>
    /// <param name="options">The processor's options.</param>
    /// <exception cref="ArgumentException">A setting conflicts with this policy; the message names it.</exception>
    public virtual void Validate(BatchingOptions options)
    {
    }
}

/// <summary>The queue's state, as a <see cref="FlushPolicy"/> sees it when a batch slot is free.</summary>
public readonly struct FlushContext
{
    /// <summary>Creates a context; the processor does this, and tests of custom policies may too.</summary>
    /// <param name="queuedItems">Items queued now (at least 1).</param>
    /// <param name="oldestItemAge">How long the oldest queued item has waited.</param>
    /// <param name="maxBatchSize">The processor's <see cref="BatchingOptions.MaxBatchSize"/>.</param>
    /// <param name="maxDelay">The processor's <see cref="BatchingOptions.MaxDelay"/>.</param>
    /// <param name="inFlightBatches">Batches running now.</param>
    /// <param name="maxConcurrentBatches">The processor's <see cref="BatchingOptions.MaxConcurrentBatches"/>.</param>
    /// <param name="totalArrivals">Items queued since the processor started, for arrival-rate estimates.</param>
    /// <param name="elapsed">Time since the processor started, on its <see cref="TimeProvider"/>.</param>
    public FlushContext(int queuedItems, TimeSpan oldestItemAge, int maxBatchSize, TimeSpan maxDelay,
        int inFlightBatches, int maxConcurrentBatches, long totalArrivals, TimeSpan elapsed)
    {
        QueuedItems = queuedItems;
        OldestItemAge = oldestItemAge;
        MaxBatchSize = maxBatchSize;
        MaxDelay = maxDelay;
        InFlightBatches = inFlightBatches;
        MaxConcurrentBatches = maxConcurrentBatches;
        TotalArrivals = totalArrivals;
        Elapsed = elapsed;
    }

    /// <summary>Items queued now (at least 1).</summary>
    public int QueuedItems { get; }

    /// <summary>How long the oldest queued item has waited, measured from its arrival.</summary>
    public TimeSpan OldestItemAge { get; }

    /// <summary>The processor's <see cref="BatchingOptions.MaxBatchSize"/>.</summary>
    public int MaxBatchSize { get; }

    /// <summary>The processor's <see cref="BatchingOptions.MaxDelay"/>.</summary>
    public TimeSpan MaxDelay { get; }

    /// <summary>Batches running now (fewer than <see cref="MaxConcurrentBatches"/>, since a slot is free).</summary>
    public int InFlightBatches { get; }

    /// <summary>The processor's <see cref="BatchingOptions.MaxConcurrentBatches"/>.</summary>
    public int MaxConcurrentBatches { get; }

    /// <summary>Items queued since the processor started.</summary>
    public long TotalArrivals { get; }

    /// <summary>Time since the processor started, on its <see cref="TimeProvider"/>.</summary>
    public TimeSpan Elapsed { get; }
}

/// <summary>A <see cref="FlushPolicy"/>'s answer: dispatch a batch now, or wait.</summary>
public readonly struct FlushDecision
{
    private FlushDecision(int dispatchCount, TimeSpan maxWait, int wakeWhenQueued)
    {
        DispatchCount = dispatchCount;
        MaxWait = maxWait;
        WakeWhenQueued = wakeWhenQueued;
    }

    /// <summary>Items to dispatch now, or 0 for a wait.</summary>
    public int DispatchCount { get; }

    /// <summary>For a wait: how long at most before the policy is asked again (never past the MaxDelay bound).</summary>
    public TimeSpan MaxWait { get; }

    /// <summary>For a wait: ask again as soon as this many items are queued.</summary>
    public int WakeWhenQueued { get; }

    /// <summary>Whether this decision dispatches a batch now.</summary>
    public bool IsDispatch => DispatchCount > 0;

    /// <summary>Dispatch a batch of <paramref name="count"/> items now (clamped to what is queued and to MaxBatchSize).</summary>
    /// <param name="count">How many of the oldest queued items to dispatch; at least 1.</param>
    /// <returns>The decision.</returns>
    public static FlushDecision Dispatch(int count) => new(Math.Max(1, count), TimeSpan.Zero, 0);

    /// <summary>Wait, and ask again after <paramref name="maxWait"/>, when <paramref name="wakeWhenQueued"/> items are queued,
    /// or when the oldest item reaches MaxDelay, whichever comes first.</summary>
    /// <param name="maxWait">The longest wait; <see cref="Timeout.InfiniteTimeSpan"/> waits for the MaxDelay bound.</param>
    /// <param name="wakeWhenQueued">Queue length that ends the wait early.</param>
    /// <returns>The decision.</returns>
    public static FlushDecision Wait(TimeSpan maxWait, int wakeWhenQueued) =>
        new(0, maxWait < TimeSpan.Zero ? Timeout.InfiniteTimeSpan : maxWait, Math.Max(1, wakeWhenQueued));
}

/// <summary>What one handler call did, reported to <see cref="FlushPolicy.OnBatchCompleted"/>.</summary>
public readonly struct BatchCompletion
{
    /// <summary>Creates a report.</summary>
    /// <param name="batchSize">Items in the handler call.</param>
    /// <param name="duration">How long the handler call took.</param>
    /// <param name="succeeded">Whether the handler returned without throwing.</param>
    public BatchCompletion(int batchSize, TimeSpan duration, bool succeeded)
    {
        BatchSize = batchSize;
        Duration = duration;
        Succeeded = succeeded;
    }

    /// <summary>Items in the handler call.</summary>
    public int BatchSize { get; }

    /// <summary>How long the handler call took.</summary>
    public TimeSpan Duration { get; }

    /// <summary>Whether the handler returned without throwing.</summary>
    public bool Succeeded { get; }
}
