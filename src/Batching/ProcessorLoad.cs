using System.Runtime.CompilerServices;

namespace Batching;

/// <summary>
/// A snapshot of how loaded a processor is, from <see cref="IBatchProcessor{TIn, TOut}.GetLoad"/>: what is queued (per
/// priority level), what runs, and how long a new item would wait. Taken in one step under the processor's lock, so its
/// counts agree with each other; allocation-free.
/// </summary>
/// <remarks>Meant for routers and load shedders: put it on every response (the web sample's <c>X-Batching-Load</c>
/// header) and a router picks the least-loaded instance without polling.</remarks>
public readonly struct ProcessorLoad
{
    /// <summary>The most priority levels a processor has: 16.</summary>
    public const int MaxPriorityLevels = 16;

    private readonly LevelCounts _queued;
    private readonly LevelWaits _waits;

    internal ProcessorLoad(int priorityLevels, ReadOnlySpan<int> queuedPerLevel, ReadOnlySpan<TimeSpan> waitPerLevel, int waitingItems,
        int batchesInFlight, int slots, int queueCapacity, bool isAccepting)
    {
        PriorityLevels = priorityLevels;
        int total = 0;
        for (int i = 0; i < priorityLevels; i++)
        {
            _queued[i] = queuedPerLevel[i];
            _waits[i] = waitPerLevel[i];
            total += queuedPerLevel[i];
        }

        QueuedItems = total;
        WaitingItems = waitingItems;
        BatchesInFlight = batchesInFlight;
        Slots = slots;
        QueueCapacity = queueCapacity;
        IsAccepting = isAccepting;
    }

    /// <summary>The processor's priority levels (<see cref="BatchingOptions.PriorityLevels"/>).</summary>
    public int PriorityLevels { get; }

    /// <summary>Items in the queue, over every level (items of multi-item calls count one each; items in running batches
    /// and items waiting for queue space do not).</summary>
    public int QueuedItems { get; }

    /// <summary>Items of callers waiting for queue space (<see cref="QueueFullMode.Wait"/>), not yet in the queue.</summary>
    public int WaitingItems { get; }

    /// <summary>Batches whose handler call is running.</summary>
    public int BatchesInFlight { get; }

    /// <summary>How many batches may run at once (<see cref="BatchingOptions.MaxConcurrentBatches"/>).</summary>
    public int Slots { get; }

    /// <summary>The most items the queue holds (<see cref="BatchingOptions.QueueCapacity"/>).</summary>
    public int QueueCapacity { get; }

    /// <summary>Whether the processor accepts new calls (false once disposed or stopped by a failure).</summary>
    public bool IsAccepting { get; }

    /// <summary>
    /// How long a new item of priority 0 would wait from its call until its batch starts, estimated from the queue ahead
    /// of it, the batches running, and the batch cost <c>t(n) = a + b·n</c> fitted over recent batches (the model the
    /// Adaptive policy uses). <see cref="TimeSpan.Zero"/> while a slot is free and the queue ahead fits in one batch, and
    /// before any batch has completed.
    /// </summary>
    public TimeSpan EstimatedWait => _waits[0];

    /// <summary>Items queued at <paramref name="priority"/>.</summary>
    /// <param name="priority">A level from 0 to <see cref="PriorityLevels"/> - 1.</param>
    /// <returns>The count.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="priority"/> is not one of the processor's levels.</exception>
    public int GetQueuedItems(int priority) => _queued[CheckLevel(priority)];

    /// <summary>As <see cref="EstimatedWait"/>, for a new item of <paramref name="priority"/>: the items that the fair
    /// share would dispatch before it are counted as ahead of it.</summary>
    /// <param name="priority">A level from 0 to <see cref="PriorityLevels"/> - 1.</param>
    /// <returns>The estimate.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="priority"/> is not one of the processor's levels.</exception>
    public TimeSpan GetEstimatedWait(int priority) => _waits[CheckLevel(priority)];

    /// <inheritdoc/>
    public override string ToString() =>
        $"queued={QueuedItems} waiting={WaitingItems} in_flight={BatchesInFlight}/{Slots} capacity={QueueCapacity} estimated_wait_ms={EstimatedWait.TotalMilliseconds:0.###}";

    private int CheckLevel(int priority)
    {
        if ((uint)priority >= (uint)Math.Max(1, PriorityLevels))
        {
            throw new ArgumentOutOfRangeException(nameof(priority), priority, $"The processor has priority levels 0 to {Math.Max(1, PriorityLevels) - 1}.");
        }

        return priority;
    }

    [InlineArray(MaxPriorityLevels)]
    private struct LevelCounts
    {
        private int _element;
    }

    [InlineArray(MaxPriorityLevels)]
    private struct LevelWaits
    {
        private TimeSpan _element;
    }
}
