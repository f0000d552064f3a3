using System.Diagnostics;
using Batching.Diagnostics;

namespace Batching.Internal;

internal sealed partial class BatchEngine<TIn, TOut>
{
    private async Task RunDispatcherAsync()
    {
        try
        {
            while (true)
            {
                Batch<TIn, TOut>? batch;
                bool exit, yield;
                lock (_lock)
                {
                    batch = NextBatchLocked(out exit, out yield);
                }

                if (exit)
                {
                    return;
                }

                if (yield)
                {
                    await Task.Yield();
                    continue;
                }

                if (batch is null)
                {
                    await _signal.WaitAsync().ConfigureAwait(false);
                    continue;
                }

                // With one slot the dispatcher has nothing else to do while the batch runs, so it runs the
                // handler itself and saves a thread hop; with more, batches start on the pool so that a handler
                // that computes synchronously does not hold up the next batch.
                if (_maxConcurrentBatches == 1)
                {
                    batch.Run();
                }
                else
                {
                    ThreadPool.UnsafeQueueUserWorkItem(batch, preferLocal: false);
                }
            }
        }
        catch (Exception ex)
        {
            // A bug here must not strand callers: fail everything that is queued or running.
            Log.DispatcherFailed(Logger, DisplayName, ex);
            Abort($"The batch dispatcher of '{DisplayName}' failed unexpectedly: {ex.Message}");
        }
    }

    /// <summary>Forms the next batch, or records what should wake the dispatcher and returns null.</summary>
    private Batch<TIn, TOut>? NextBatchLocked(out bool exit, out bool yield)
    {
        Debug.Assert(Monitor.IsEntered(_lock));
        exit = false;
        yield = false;
        if (_aborted)
        {
            exit = true;
            return null;
        }

        if (_queuedItems == 0)
        {
            exit = _disposed && _inFlight == 0;
            SleepLocked(wakeWhenQueued: 1, wait: null);
            return null;
        }

        if (_inFlight >= _maxConcurrentBatches)
        {
            SleepLocked(wakeWhenQueued: int.MaxValue, wait: null); // a finishing batch wakes us
            return null;
        }

        int take = DecideLocked(out int wakeWhenQueued, out TimeSpan wait);
        if (take > 0)
        {
            // The callers the previous batch released are queued on the thread pool and most will call again at
            // once. Before taking a smaller batch than that one, give them one scheduling turn (a yield through the
            // pool's global queue, microseconds, never a timer) to re-queue; otherwise an eager policy chases them
            // one item at a time. Once per batch, and not during a drain.
            if (take < _lastBatchSize && !_yieldedSinceLastBatch && !_disposed)
            {
                _yieldedSinceLastBatch = true;
                yield = true;
                return null;
            }

            _yieldedSinceLastBatch = false;
            _lastBatchSize = take;
            return TakeBatchLocked(take);
        }

        SleepLocked(wakeWhenQueued, wait);
        return null;
    }

    /// <summary>
    /// Asks the policy, within the hard bounds, how many of the queued items to dispatch now (a slot is free and
    /// the queue is not empty); 0 means wait up to <paramref name="wait"/> or until <paramref name="wakeWhenQueued"/> items.
    /// </summary>
    private int DecideLocked(out int wakeWhenQueued, out TimeSpan wait)
    {
        Debug.Assert(Monitor.IsEntered(_lock) && _queuedItems > 0 && _inFlight < _maxConcurrentBatches);
        wakeWhenQueued = 0;
        wait = TimeSpan.Zero;
        long now = Time.GetTimestamp();
        TimeSpan oldestAge = Time.GetElapsedTime(_queue.Head!.EnqueuedTimestamp, now);
        int available = Math.Min(_queuedItems, _maxBatchSize);
        if (_disposed || oldestAge >= _maxDelay)
        {
            // The hard bound (or a drain) overrides the policy.
            return available;
        }

        FlushDecision decision;
        try
        {
            decision = _policy.Decide(new FlushContext(_queuedItems, oldestAge, _maxBatchSize, _maxDelay,
                _inFlight, _maxConcurrentBatches, _totalArrivals, Time.GetElapsedTime(_startTimestamp, now)));
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

        TimeSpan untilBound = _maxDelay - oldestAge;
        wait = decision.MaxWait == Timeout.InfiniteTimeSpan || decision.MaxWait > untilBound ? untilBound : decision.MaxWait;
        if (wait <= TimeSpan.Zero)
        {
            return available;
        }

        wakeWhenQueued = Math.Max(decision.WakeWhenQueued, _queuedItems + 1);
        return 0;
    }

    /// <summary>
    /// The idle fast path (opt-in, <see cref="BatchingOptions.InlineWhenIdle"/>): a lone item arrives, a slot is
    /// free and the dispatcher sleeps. If the policy would
    /// dispatch it at once (Adaptive does, when nothing runs), the caller runs the batch itself instead of waking
    /// the dispatcher: no thread hop, and a synchronous handler completes the call before it even returns.
    /// This is what a caller would pay calling the handler directly, plus the bookkeeping.
    /// </summary>
    private Batch<TIn, TOut>? TryTakeInlineBatchLocked()
    {
        Debug.Assert(Monitor.IsEntered(_lock));
        if (!_inlineWhenIdle || _queuedItems != 1 || !_dispatcherWaiting || _inFlight >= _maxConcurrentBatches || _disposed)
        {
            return null;
        }

        int take = DecideLocked(out _, out _);
        return take > 0 ? TakeBatchLocked(take) : null;
    }

    private void SleepLocked(int wakeWhenQueued, TimeSpan? wait)
    {
        _dispatcherWaiting = true;
        _wakeWhenQueued = wakeWhenQueued;
        if (wait is not { } delay || delay <= TimeSpan.Zero)
        {
            return;
        }

        long now = Time.GetTimestamp();
        long due = now + (long)(delay.TotalSeconds * Time.TimestampFrequency);

        // Keep a pending timer that fires sooner: it wakes us early and we simply decide again.
        if (_timerDueTimestamp > now && _timerDueTimestamp <= due)
        {
            return;
        }

        _timerDueTimestamp = due;
        if (_preciseDeadlines)
        {
            DeadlineScheduler.Schedule(this, due);
        }
        else
        {
            _timer!.Change(delay, Timeout.InfiniteTimeSpan);
        }
    }

    private Batch<TIn, TOut> TakeBatchLocked(int count)
    {
        Debug.Assert(Monitor.IsEntered(_lock));
        Debug.Assert(count >= 1 && count <= _queuedItems && count <= _maxBatchSize);
        Batch<TIn, TOut> batch = _batchPool.Count > 0 ? _batchPool.Pop() : new Batch<TIn, TOut>(this, _maxBatchSize);
        int generation = batch.Generation;
        for (int i = 0; i < count; i++)
        {
            Request<TIn, TOut> request = _queue.RemoveFirst()!;
            request.State = RequestState.InBatch;
            request.Batch = batch;
            request.BatchGeneration = generation;
            batch.Items[i] = request;
        }

        _queuedItems -= count;
        _inFlight++;
        _running.Add(batch);
        batch.Begin(count);
        AdmitWaitingLocked();
        return batch;
    }

    internal void OnBatchFinished(Batch<TIn, TOut> batch, int count, TimeSpan duration, bool succeeded, bool slotHeld)
    {
        bool wake;
        lock (_lock)
        {
            if (slotHeld)
            {
                _inFlight--;
                _running.Remove(batch);
            }

            try
            {
                _policy.OnBatchCompleted(new BatchCompletion(count, duration, succeeded));
            }
            catch (Exception)
            {
                // A custom policy's bookkeeping error must not break batch completion.
            }

            if (!_aborted)
            {
                _batchPool.Push(batch);
            }

            wake = SlotFreedLocked();
        }

        if (wake)
        {
            _signal.Set();
        }
    }

    /// <summary>
    /// A slot was freed: wake the sleeping dispatcher if there is work for it. With an empty queue it stays asleep
    /// until the next arrival, which then finds the slot free and may take the idle fast path.
    /// </summary>
    private bool SlotFreedLocked()
    {
        if (!_dispatcherWaiting)
        {
            return false;
        }

        if (_queuedItems > 0 || _disposed)
        {
            _dispatcherWaiting = false;
            return true;
        }

        _wakeWhenQueued = 1;
        return false;
    }

    /// <summary>A batch's execution timer fired: release its callers and free its slot so the processor keeps serving.</summary>
    internal void OnBatchTimedOut(Batch<TIn, TOut> batch)
    {
        CancellationTokenSource? cts;
        bool gaveUp, wake = false;
        lock (_lock)
        {
            gaveUp = batch.GiveUpLocked(_timeoutFailure, onlyIfTimedOut: true, out cts);
            if (gaveUp && _running.Remove(batch))
            {
                _inFlight--;
                wake = SlotFreedLocked();
            }
        }

        if (gaveUp)
        {
            Log.BatchTimedOut(Logger, DisplayName, batch.Count, ExecutionTimeout);
        }

        Batch<TIn, TOut>.Cancel(cts);
        if (wake)
        {
            _signal.Set();
        }
    }
}
