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
                bool exit;
                lock (_lock)
                {
                    batch = NextBatchLocked(out exit);
                }

                if (exit)
                {
                    return;
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
    private Batch<TIn, TOut>? NextBatchLocked(out bool exit)
    {
        Debug.Assert(Monitor.IsEntered(_lock));
        exit = false;
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

        long now = Time.GetTimestamp();
        TimeSpan oldestAge = Time.GetElapsedTime(_queue.Head!.EnqueuedTimestamp, now);
        int available = Math.Min(_queuedItems, _maxBatchSize);
        if (_disposed || oldestAge >= _maxDelay)
        {
            // The hard bound (or a drain) overrides the policy.
            return TakeBatchLocked(available);
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
            decision = FlushDecision.Dispatch(available);
        }

        if (decision.IsDispatch)
        {
            return TakeBatchLocked(Math.Min(decision.DispatchCount, available));
        }

        TimeSpan untilBound = _maxDelay - oldestAge;
        TimeSpan wait = decision.MaxWait == Timeout.InfiniteTimeSpan || decision.MaxWait > untilBound ? untilBound : decision.MaxWait;
        if (wait <= TimeSpan.Zero)
        {
            return TakeBatchLocked(available);
        }

        SleepLocked(Math.Max(decision.WakeWhenQueued, _queuedItems + 1), wait);
        return null;
    }

    private void SleepLocked(int wakeWhenQueued, TimeSpan? wait)
    {
        _dispatcherWaiting = true;
        _wakeWhenQueued = wakeWhenQueued;
        if (wait is not { } delay)
        {
            return;
        }

        if (_coarseTimer)
        {
            delay = TimeSpan.FromMilliseconds(Math.Ceiling(delay.TotalMilliseconds));
        }

        long now = Time.GetTimestamp();
        long due = now + (long)(delay.TotalSeconds * Time.TimestampFrequency);

        // Keep a pending timer that fires sooner: it wakes us early and we simply decide again.
        if (_timerDueTimestamp > now && _timerDueTimestamp <= due)
        {
            return;
        }

        _timerDueTimestamp = due;
        _timer.Change(delay, Timeout.InfiniteTimeSpan);
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

            wake = _dispatcherWaiting;
            _dispatcherWaiting = false;
        }

        if (wake)
        {
            _signal.Set();
        }
    }

    /// <summary>A batch's execution timer fired: release its callers and free its slot so the processor keeps serving.</summary>
    internal void OnBatchTimedOut(Batch<TIn, TOut> batch)
    {
        CancellationTokenSource? cts;
        bool wake = false;
        lock (_lock)
        {
            cts = batch.GiveUpLocked(_timeoutFailure, onlyIfTimedOut: true);
            if (cts is not null && _running.Remove(batch))
            {
                _inFlight--;
                wake = _dispatcherWaiting;
                _dispatcherWaiting = false;
            }
        }

        if (cts is not null)
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
