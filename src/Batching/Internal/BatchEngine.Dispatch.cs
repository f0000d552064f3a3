using System.Diagnostics;
using Batching.Diagnostics;
using Batching.Internal.Admission;
using Batching.Internal.Execution;
using Batching.Internal.Timing;

namespace Batching.Internal;

internal sealed partial class BatchEngine<TIn, TOut>
{
    /// <summary>A run of the dispatcher scheduled by <see cref="Dispatch.DispatchWakeUp"/>, on its own pool work item. The
    /// first batch it starts runs on this same thread once the dispatcher role is released: one hop, not two.</summary>
    private void RunDispatcher() => Batch<TIn, TOut>.RunHere(DispatchUntilIdle());

    /// <summary>Dispatches until the wake-up lets the role go; returns the first batch started, for this thread to run.</summary>
    private Batch<TIn, TOut>? DispatchUntilIdle()
    {
        Batch<TIn, TOut>? first = null;
        do
        {
            DispatchSafely(ref first);
        }
        while (!_wakeUp.EndRun());

        return first;
    }

    private void DispatchSafely(ref Batch<TIn, TOut>? first)
    {
        try
        {
            Dispatch(ref first);
        }
        catch (Exception ex)
        {
            // A bug, or a host whose clock throws: the processor can no longer serve, and says so.
            DispatcherFailed(ex);
        }
    }

    /// <summary>
    /// One run of the dispatcher (never concurrent with itself): starts batches while slots are free and the policy
    /// says go, then records what should wake it and returns. Each batch's handler runs on a pool work item of its own,
    /// never here: the first batch is handed back, in <paramref name="first"/>, for this thread to run after the
    /// dispatcher role is released; the others get work items.
    /// </summary>
    private void Dispatch(ref Batch<TIn, TOut>? first)
    {
        bool more = true;
        while (more)
        {
            Batch<TIn, TOut>? batch;
            List<Removal<TIn, TOut>>? expired = null;
            lock (_lock)
            {
                batch = NextBatchLocked(out more, ref expired);
                AssertInvariants();
            }

            if (expired is not null)
            {
                foreach (Removal<TIn, TOut> removal in expired)
                {
                    FailItems(removal, Expired(removal.Request), Outcomes.Expired);
                }
            }

            if (batch is null)
            {
                return;
            }

            if (first is null)
            {
                first = batch;
            }
            else
            {
                ThreadPool.UnsafeQueueUserWorkItem(batch, preferLocal: false);
            }
        }
    }

    /// <summary>Starts the next batch, or records what should wake the dispatcher and returns null. <paramref name="more"/>
    /// is false when the dispatcher went to sleep in this same lock body (the batch just started took the last slot).</summary>
    private Batch<TIn, TOut>? NextBatchLocked(out bool more, ref List<Removal<TIn, TOut>>? expired)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        more = false;
        if (_state is ProcessorState.Stopped or ProcessorState.Faulted)
        {
            return null;
        }

        long now = _time.GetTimestamp();
        _queue.ExpireLocked(now, ref expired);
        if (_queue.QueuedItems == 0 && _state == ProcessorState.Draining && _running.Count == 0)
        {
            StopLocked();
            return null;
        }

        if (SlotsOccupiedLocked() >= _maxConcurrentBatches)
        {
            // Arrivals need not wake us: a finishing batch or burst does (or a queued item's deadline).
            _wakeUp.SleepLocked(wakeWhenQueued: int.MaxValue, _queue.NextDeadlineLocked());
            return null;
        }

        if (_queue.QueuedItems == 0)
        {
            _wakeUp.SleepLocked(wakeWhenQueued: 1, Timestamps.Never);
            return null;
        }

        int take = DecideLocked(now, out int wakeWhenQueued, out long due);
        if (take > 0)
        {
            Batch<TIn, TOut> batch = StartBatchLocked(take, now);
            more = SlotsOccupiedLocked() < _maxConcurrentBatches;
            if (!more)
            {
                _wakeUp.SleepLocked(wakeWhenQueued: int.MaxValue, _queue.NextDeadlineLocked());
            }

            return batch;
        }

        _wakeUp.SleepLocked(wakeWhenQueued, Math.Min(due, _queue.NextDeadlineLocked()));
        return null;
    }

    /// <summary>
    /// Slots taken for starting a new batch: batches running their handler, and batches still resuming their callers
    /// inline. Counting the latter keeps a batch's callers and the next batch on one thread in turn when both compete
    /// for the CPU (the callers queue their next items while they are resumed, so the next batch is fuller, and the
    /// queue's lock and cache lines stay on one core). A burst ends within about a millisecond even when a caller's
    /// continuation blocks (see <see cref="Execution.ResumeWatch{TIn, TOut}"/>), so this never holds a slot for long;
    /// a batch that timed out or was abandoned frees its slot at once. For ExecutionTimeout and metrics, a batch holds
    /// its slot only while it is in the running set.
    /// </summary>
    private int SlotsOccupiedLocked() => _running.Count + Volatile.Read(ref _openResumeBursts);

    /// <summary>
    /// Within the hard bounds, how many of the queued items to dispatch now (a slot is free and the queue is not
    /// empty); 0 means wait until <paramref name="due"/> or until <paramref name="wakeWhenQueued"/> items are queued.
    /// </summary>
    private int DecideLocked(long now, out int wakeWhenQueued, out long due)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread && _queue.QueuedItems > 0 && SlotsOccupiedLocked() < _maxConcurrentBatches);
        wakeWhenQueued = 0;
        due = Timestamps.Never;
        int queued = _queue.QueuedItems;
        int available = Math.Min(queued, _maxBatchSize);
        long oldest = _queue.OldestArrivalLocked;
        long bound = Timestamps.Add(oldest, _maxDelay, _time.TimestampFrequency);
        if (_state == ProcessorState.Draining || now >= bound)
        {
            // The hard bound (or a drain) overrides the policy.
            return available;
        }

        if (queued < _maxBatchSize && Volatile.Read(ref _openResumeBursts) > 0)
        {
            // A finished batch is resuming its callers right now (in another slot), and most will queue again within
            // microseconds: form the next partial batch when that burst ends (it signals), not from its first caller.
            wakeWhenQueued = _maxBatchSize;
            due = bound;
            return 0;
        }

        FlushDecision decision;
        try
        {
            decision = _policy.Decide(new FlushContext(queued, _time.GetElapsedTime(oldest, now), _maxBatchSize, _maxDelay,
                _running.Count, _maxConcurrentBatches, _queue.Arrivals, _time.GetElapsedTime(_startTimestamp, now)));
        }
        catch (Exception ex)
        {
            // A faulty custom policy degrades to dispatching at once; it must never stall the queue.
            Log.PolicyFailed(Logger, DisplayName, _policy.Name, ex);
            return available;
        }

        if (decision.IsDispatch)
        {
            return Math.Min(decision.DispatchCount, available);
        }

        due = decision.MaxWait == Timeout.InfiniteTimeSpan ? bound : Math.Min(bound, Timestamps.Add(now, decision.MaxWait, _time.TimestampFrequency));
        if (due <= now)
        {
            return available;
        }

        wakeWhenQueued = (int)Math.Min(int.MaxValue, Math.Max(decision.WakeWhenQueued, queued + 1L));
        return 0;
    }

    /// <summary>
    /// The idle fast path (opt-in, <see cref="BatchingOptions.InlineWhenIdle"/>): a lone item arrives, a slot is free
    /// and the dispatcher sleeps. If the policy would dispatch it at once (Adaptive does, when nothing runs), the caller
    /// runs the batch itself instead of waking the dispatcher: no thread hop, and a synchronous handler completes the
    /// call before it even returns. The handler still runs in the clean context and its own activity.
    /// </summary>
    private Batch<TIn, TOut>? TryStartInlineLocked(long now, out bool wake)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        wake = false;
        if (!_inlineWhenIdle || _queue.QueuedItems != 1 || !_wakeUp.IsIdle || SlotsOccupiedLocked() >= _maxConcurrentBatches)
        {
            return null;
        }

        // Only for a caller on the default scheduler: a handler run on a UI thread (or inside an exclusive scheduler)
        // would post its own continuations there, and a caller blocking that thread would wait for ExecutionTimeout.
        SynchronizationContext? context = SynchronizationContext.Current;
        if ((context is not null && context.GetType() != typeof(SynchronizationContext)) || TaskScheduler.Current != TaskScheduler.Default)
        {
            return null;
        }

        if (DecideLocked(now, out _, out _) != 1)
        {
            return null;
        }

        Batch<TIn, TOut> batch = StartBatchLocked(1, now);
        wake = _queue.QueuedItems > 0; // callers waiting for space took the freed room
        return batch;
    }

    /// <summary>Start: a batch of the <paramref name="count"/> oldest queued items takes a slot.</summary>
    private Batch<TIn, TOut> StartBatchLocked(int count, long now)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread && count >= 1 && count <= _queue.QueuedItems && count <= _maxBatchSize);
        // Fewer than count when the weight budget ends the batch first.
        Batch<TIn, TOut> batch = _idleBatches.TryDequeue(out Batch<TIn, TOut>? idle) ? idle : new Batch<TIn, TOut>(_context, this);
        batch.StartLocked(_queue, count, _itemWeight is not null, _maxBatchWeight, now);
        _running.Add(batch);
        Interlocked.Increment(ref _batchesInTransit);
        _queue.AdmitWaitingLocked();
        return batch;
    }
}
