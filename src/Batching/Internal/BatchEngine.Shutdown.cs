using Batching.Diagnostics;

namespace Batching.Internal;

internal sealed partial class BatchEngine<TIn, TOut>
{
    public ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            if (_disposeTask is null)
            {
                _disposed = true;
                _disposeTask = Task.Run(DisposeCoreAsync);
            }

            return new ValueTask(_disposeTask);
        }
    }

    /// <summary>
    /// Shutdown: intake is already closed. Callers still waiting for queue space never entered the queue and fail
    /// at once; queued items are dispatched without waiting for the policy; whatever has not finished after
    /// ShutdownTimeout fails with <see cref="ObjectDisposedException"/>.
    /// </summary>
    private async Task DisposeCoreAsync()
    {
        List<Request<TIn, TOut>> notAdmitted = [];
        long started = Time.GetTimestamp();
        lock (_lock)
        {
            Log.Draining(Logger, DisplayName, _queuedItems, _inFlight, Options.ShutdownTimeout);
            while (_waitingForSpace.RemoveFirst() is { } request)
            {
                request.State = RequestState.Completed;
                notAdmitted.Add(request);
            }

            _dispatcherWaiting = false;
        }

        Telemetry.RequestsFinished(Outcomes.Rejected, notAdmitted.Count);
        foreach (Request<TIn, TOut> request in notAdmitted)
        {
            request.SetException(new ObjectDisposedException(DisplayName, "The batch processor was disposed while this item waited for queue space; it was never queued."));
            request.Release();
        }

        _signal.Set();
        TimeSpan timeout = Options.ShutdownTimeout;
        bool drained;
        try
        {
            if (timeout == Timeout.InfiniteTimeSpan)
            {
                await _dispatcher.ConfigureAwait(false);
            }
            else
            {
                await _dispatcher.WaitAsync(timeout, Time).ConfigureAwait(false);
            }

            drained = true;
        }
        catch (TimeoutException)
        {
            drained = false;
        }

        if (drained)
        {
            Log.Drained(Logger, DisplayName, Time.GetElapsedTime(started));
        }
        else
        {
            Abort($"The batch processor was disposed and this item did not finish within ShutdownTimeout ({timeout}).");
        }

        _timer?.Dispose();
        if (_preciseDeadlines)
        {
            DeadlineScheduler.Cancel(this);
        }

        Telemetry.Dispose();
        lock (_lock)
        {
            foreach (Batch<TIn, TOut> batch in _batchPool)
            {
                batch.DisposeResources();
            }
        }
    }

    /// <summary>Fails every queued item and gives up on every running batch; the dispatcher then exits.</summary>
    private void Abort(string reason)
    {
        List<Request<TIn, TOut>> queued = [];
        List<CancellationTokenSource> toCancel = [];
        int failedInBatches = 0;
        Func<int, Exception> failure = _ =>
        {
            failedInBatches++;
            return new ObjectDisposedException(DisplayName, reason);
        };

        // GiveUpLocked reports its own failures to metrics; only the queued ones are counted here.
        lock (_lock)
        {
            _aborted = true;
            _disposed = true;
            while (_queue.RemoveFirst() is { } request)
            {
                request.State = RequestState.Completed;
                queued.Add(request);
            }

            while (_waitingForSpace.RemoveFirst() is { } request)
            {
                request.State = RequestState.Completed;
                queued.Add(request);
            }

            _queuedItems = 0;
            foreach (Batch<TIn, TOut> batch in _running)
            {
                if (batch.GiveUpLocked(failure, onlyIfTimedOut: false, out CancellationTokenSource? cts) && cts is not null)
                {
                    toCancel.Add(cts);
                }
            }

            _running.Clear();
            _inFlight = 0;
        }

        _signal.Set();
        Telemetry.RequestsFinished(Outcomes.Failed, queued.Count);
        Log.Aborted(Logger, DisplayName, queued.Count + failedInBatches, reason);
        foreach (Request<TIn, TOut> request in queued)
        {
            request.SetException(new ObjectDisposedException(DisplayName, reason));
            request.Release();
        }

        foreach (CancellationTokenSource cts in toCancel)
        {
            Batch<TIn, TOut>.Cancel(cts);
        }
    }
}
