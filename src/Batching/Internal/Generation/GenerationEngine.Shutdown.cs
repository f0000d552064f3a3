using Batching.Diagnostics;

namespace Batching.Internal.Generation;

internal sealed partial class GenerationEngine<TPrompt, TState, TToken>
{
    public ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            if (_disposeTask is null)
            {
                _state = GenerationState.Draining;
                Log.GenerationDraining(_logger, Name, _activeCount, _lanes.Count, _shutdownTimeout);
                CheckDrainedLocked();
                _disposeTask = ShutdownAsync();
            }

            return new ValueTask(_disposeTask);
        }
    }

    /// <summary>Waits for the active and queued sequences to finish within the shutdown timeout, then fails the rest.</summary>
    private async Task ShutdownAsync()
    {
        // Yield first: DisposeAsync holds the lock while it creates this task.
        await Task.Yield();
        if (_shutdownTimeout == Timeout.InfiniteTimeSpan)
        {
            await _drained.Task.ConfigureAwait(false);
        }
        else if (!_drained.Task.IsCompleted)
        {
            using var timeout = new CancellationTokenSource(_shutdownTimeout, _time);
            await _drained.Task.WaitAsync(timeout.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        Stop(_drained.Task.IsCompleted ? null : $"ShutdownTimeout ({_shutdownTimeout}) passed before every sequence finished.", null);
    }

    /// <summary>Stops the processor: every sequence still queued or active fails with <see cref="ObjectDisposedException"/>
    /// (or <paramref name="cause"/>'s error), a running step's token is cancelled, and the timers stop.</summary>
    private void Stop(string? reason, Exception? cause)
    {
        var ending = new List<Sequence<TPrompt, TState, TToken>>();
        CancellationTokenSource? cancel;
        lock (_lock)
        {
            if (_state == GenerationState.Stopped)
            {
                return;
            }

            _state = GenerationState.Stopped;
            _lanes.RemoveAll(ending);
            foreach (Sequence<TPrompt, TState, TToken> sequence in ending)
            {
                sequence.State = SequenceState.Ended;
            }

            foreach (Sequence<TPrompt, TState, TToken> sequence in _active)
            {
                if (TryEndLocked(sequence))
                {
                    ending.Add(sequence);
                }
            }

            _active.Clear();
            _liveDeadlines = 0;
            _deadlines.Clear();
            TakeOverLocked(out cancel);
            _loopRunning = false;
            _drained.TrySetResult();
        }

        CancelQuietly(cancel);
        if (ending.Count > 0)
        {
            Log.GenerationAborted(_logger, Name, ending.Count, reason ?? cause?.Message ?? "stopped");
        }

        Exception error = cause is null
            ? new ObjectDisposedException(Name, $"The generation processor '{Name}' was disposed before the sequence finished: {reason}")
            : new ObjectDisposedException($"The generation processor '{Name}' stopped because its step loop failed: {cause.Message}", cause);
        foreach (Sequence<TPrompt, TState, TToken> sequence in ending)
        {
            EndOutsideLock(sequence, SequenceEnd.Failed, error, Outcomes.Failed);
        }

        _stepTimer.Dispose();
        _expiryTimer.Dispose();
        _telemetry.Dispose();
    }

    /// <summary>A bug in the loop (never user code: the step's exceptions are caught per step): fail everything, stop.</summary>
    private void LoopFailed(Exception ex)
    {
        Log.GenerationLoopFailed(_logger, Name, ex);
        Stop(null, ex);
    }
}
