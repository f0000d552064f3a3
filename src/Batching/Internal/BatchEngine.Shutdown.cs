using Batching.Diagnostics;
using Batching.Internal.Admission;
using Batching.Internal.Execution;
using Batching.Internal.Timing;

namespace Batching.Internal;

internal sealed partial class BatchEngine<TIn, TOut>
{
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource? _disposal;

    /// <summary>Stops intake, drains, and completes; never throws, whatever the host's loggers, listeners or clock do.</summary>
    public ValueTask DisposeAsync()
    {
        TaskCompletionSource? mine = null;
        Task task;
        lock (_lock)
        {
            if (_disposal is null)
            {
                _disposal = mine = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }

            task = _disposal.Task;
        }

        if (mine is not null)
        {
            // In the clean context: the drain must not carry the disposing caller's AsyncLocals into timers it creates.
            CleanContext.Run(static s =>
            {
                var (engine, done) = ((BatchEngine<TIn, TOut>, TaskCompletionSource))s!;
                _ = engine.ShutdownAsync(done);
            }, (this, mine));
        }

        return new ValueTask(task);
    }

    /// <summary>For hosts that dispose synchronously (a DI container in a <c>using</c>): blocks until the drain of
    /// <see cref="DisposeAsync"/> completes, so for up to ShutdownTimeout and whatever the batches still running take.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private async Task ShutdownAsync(TaskCompletionSource done)
    {
        try
        {
            await DrainAsync().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Only a hostile clock can get here (its timers or timestamps threw): give up on what is left.
            Abort($"The batch processor was disposed and its shutdown failed: {ex.Message}", ProcessorState.Stopped);
        }
        finally
        {
            // Each step is guarded (a custom clock's timers, a meter listener): disposal always completes.
            try
            {
                _wakeUp.Dispose();
            }
            catch (Exception)
            {
                // reported by the guarded clock
            }

            Telemetry.Dispose();
            while (_idleBatches.TryDequeue(out Batch<TIn, TOut>? batch))
            {
                batch.DisposeResources();
            }

            done.TrySetResult();
        }
    }

    /// <summary>
    /// Shutdown: intake closes. Callers still waiting for queue space never entered the queue and fail at once; queued
    /// items are dispatched without waiting for the policy; whatever has not finished after ShutdownTimeout fails with
    /// <see cref="ObjectDisposedException"/>.
    /// </summary>
    private async Task DrainAsync()
    {
        List<Removal<TIn, TOut>> notAdmitted = [];
        long started = _time.GetTimestamp();
        int queued, inFlight;
        lock (_lock)
        {
            if (_state == ProcessorState.Running)
            {
                _state = ProcessorState.Draining;
                _queue.RemoveAllWaitingLocked(notAdmitted);
            }

            queued = _queue.QueuedItems;
            inFlight = _running.Count;
            AssertInvariants();
        }

        Log.Draining(Logger, DisplayName, queued, inFlight, _shutdownTimeout);
        foreach (Removal<TIn, TOut> removal in notAdmitted)
        {
            FailItems(removal, new ObjectDisposedException(DisplayName, "The batch processor was disposed while this item waited for queue space; it was never queued."), Outcomes.Rejected);
        }

        _wakeUp.Signal();
        if (await WaitAsync(_stopped.Task, _shutdownTimeout).ConfigureAwait(false))
        {
            if (State == ProcessorState.Stopped)
            {
                Log.Drained(Logger, DisplayName, _time.GetElapsedTime(started));
            }
        }
        else
        {
            Abort($"The batch processor was disposed and this item did not finish within ShutdownTimeout ({_shutdownTimeout}).", ProcessorState.Stopped);
        }
    }

    /// <summary>Waits for <paramref name="task"/> up to <paramref name="timeout"/> on the processor's clock, for any
    /// timeout validation accepts (the deadline timer waits in steps past what one .NET timer can).</summary>
    private async Task<bool> WaitAsync(Task task, TimeSpan timeout)
    {
        var expired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using DeadlineTimer timer = DeadlineTimer.Create(_time, () => expired.TrySetResult(), precise: false);
        timer.ArmNoLaterThan(Timestamps.Add(_time.GetTimestamp(), timeout, _time.TimestampFrequency)); // infinite: never
        return await Task.WhenAny(task, expired.Task).ConfigureAwait(false) == task;
    }

    /// <summary>The last drained batch left: the processor is stopped.</summary>
    private void StopLocked()
    {
        _state = ProcessorState.Stopped;
        _stopped.TrySetResult();
    }

    /// <summary>The dispatcher (or a timer callback) failed: the processor can no longer serve. Fail everything.</summary>
    private void DispatcherFailed(Exception error)
    {
        Log.DispatcherFailed(Logger, DisplayName, error);
        Abort($"The batch dispatcher of '{DisplayName}' failed unexpectedly: {error.Message}", ProcessorState.Faulted, error.Message);
    }

    /// <summary>Fails every queued item and abandons every running batch; the processor ends in <paramref name="final"/>.</summary>
    private void Abort(string reason, ProcessorState final, string? fault = null)
    {
        List<Removal<TIn, TOut>> queued = [];
        List<Removal<TIn, TOut>> inBatches = [];
        List<CancellationTokenSource> toCancel = [];
        lock (_lock)
        {
            if (_state is ProcessorState.Stopped or ProcessorState.Faulted && _running.Count == 0 && _queue.QueuedItems == 0)
            {
                return;
            }

            _state = final;
            _faultReason ??= fault;
            _queue.RemoveAllLocked(queued);
            foreach (Batch<TIn, TOut> batch in _running)
            {
                batch.AbandonLocked(inBatches, out CancellationTokenSource? cts);
                if (cts is not null)
                {
                    toCancel.Add(cts);
                }
            }

            _running.Clear();
            _stopped.TrySetResult();
            AssertInvariants();
        }

        _wakeUp.Signal();
        Log.Aborted(Logger, DisplayName, queued.Count + inBatches.Count, reason);
        foreach (Removal<TIn, TOut> removal in queued)
        {
            FailItems(removal, new ObjectDisposedException(DisplayName, reason), Outcomes.Failed);
        }

        foreach (Removal<TIn, TOut> removal in inBatches)
        {
            FailItems(removal, new ObjectDisposedException(DisplayName, reason), Outcomes.Failed); // their batches hold the reference
        }

        foreach (CancellationTokenSource cts in toCancel)
        {
            Batch<TIn, TOut>.Cancel(cts);
        }
    }
}
