using System.Diagnostics;
using Batching.Diagnostics;
using Batching.Internal.Execution;
using Batching.Internal.Timing;

namespace Batching.Internal;

internal sealed partial class BatchEngine<TIn, TOut>
{
    /// <summary>
    /// One run of the dispatcher (on a pool thread, scheduled by <see cref="Dispatch.DispatchWakeUp"/>, never
    /// concurrent with itself): starts batches while slots are free and the policy says go, then records what should
    /// wake it and returns. Each batch's handler runs on a pool work item of its own, never here.
    /// </summary>
    private void Dispatch()
    {
        while (true)
        {
            Batch<TIn, TOut>? batch;
            lock (_lock)
            {
                batch = NextBatchLocked();
                AssertInvariants();
            }

            if (batch is null)
            {
                return;
            }

            ThreadPool.UnsafeQueueUserWorkItem(batch, preferLocal: false);
        }
    }

    /// <summary>Starts the next batch, or records what should wake the dispatcher and returns null.</summary>
    private Batch<TIn, TOut>? NextBatchLocked()
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        if (_state is ProcessorState.Stopped or ProcessorState.Faulted)
        {
            return null;
        }

        long now = _time.GetTimestamp();
        if (_queue.QueuedItems == 0)
        {
            if (_state == ProcessorState.Draining && _running.Count == 0)
            {
                StopLocked();
                return null;
            }

            _wakeUp.SleepLocked(wakeWhenQueued: 1, Timestamps.Never, now);
            return null;
        }

        if (_running.Count >= _maxConcurrentBatches)
        {
            _wakeUp.SleepLocked(wakeWhenQueued: int.MaxValue, Timestamps.Never, now); // a finishing batch signals
            return null;
        }

        int take = DecideLocked(now, out int wakeWhenQueued, out long due);
        if (take > 0)
        {
            return StartBatchLocked(take, now);
        }

        _wakeUp.SleepLocked(wakeWhenQueued, due, now);
        return null;
    }

    /// <summary>
    /// Within the hard bounds, how many of the queued items to dispatch now (a slot is free and the queue is not
    /// empty); 0 means wait until <paramref name="due"/> or until <paramref name="wakeWhenQueued"/> items are queued.
    /// </summary>
    private int DecideLocked(long now, out int wakeWhenQueued, out long due)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread && _queue.QueuedItems > 0 && _running.Count < _maxConcurrentBatches);
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
            // A finished batch is resuming its callers right now, and most will queue again within microseconds: form
            // the next partial batch when that burst ends (it signals), not from its first returning caller.
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

        wakeWhenQueued = (int)Math.Min(int.MaxValue, Math.Max((long)decision.WakeWhenQueued, queued + 1L));
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
        if (!_inlineWhenIdle || _queue.QueuedItems != 1 || !_wakeUp.IsIdle || _running.Count >= _maxConcurrentBatches
            || Volatile.Read(ref _openResumeBursts) > 0)
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
        Batch<TIn, TOut> batch = _idleBatches.TryDequeue(out Batch<TIn, TOut>? idle) ? idle : new Batch<TIn, TOut>(_context, this);
        batch.StartLocked(_queue, count, now);
        _running.Add(batch);
        Interlocked.Increment(ref _batchesInTransit);
        _queue.AdmitWaitingLocked();
        return batch;
    }
}
