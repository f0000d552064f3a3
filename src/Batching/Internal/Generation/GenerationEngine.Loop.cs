using System.Diagnostics;
using Batching.Diagnostics;
using Batching.Internal.Timing;

namespace Batching.Internal.Generation;

internal sealed partial class GenerationEngine<TPrompt, TState, TToken>
{
    /// <summary>One runner of the step loop, for <paramref name="epoch"/>: boundary, step, delivery, until there is
    /// nothing to step (then the loop goes idle) or its epoch is taken over.</summary>
    private async Task RunAsync(int epoch)
    {
        var leaving = new List<(Sequence<TPrompt, TState, TToken> Sequence, SequenceEnd End, Exception? Error, string Outcome)>();
        var done = new List<Sequence<TPrompt, TState, TToken>>();
        try
        {
            while (true)
            {
                StepBuffers buffers;
                CancellationToken token;
                int count;
                long now = _time.GetTimestamp();
                lock (_lock)
                {
                    if (epoch != _epoch)
                    {
                        return;
                    }

                    buffers = _buffers ??= new StepBuffers(Math.Min(_maxSequences, 64));
                    count = BoundaryLocked(buffers, done, leaving, now);
                    if (count == 0)
                    {
                        _loopRunning = false;
                        CheckDrainedLocked();
                    }
                    else
                    {
                        _stepRunning = true;
                        _stepCount = count;
                        _stepDeadline = Timestamps.Add(now, _stepTimeout, _time.TimestampFrequency);
                    }

                    token = _stepCts.Token;
                }

                EndAll(leaving);
                if (count == 0)
                {
                    ArmExpiry();
                    return;
                }

                _stepTimer.ArmNoLaterThan(_stepDeadline);
                Exception? failure = null;
                try
                {
                    await InvokeStep(buffers, count, token).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    failure = ex;
                }

                long end = _time.GetTimestamp();
                lock (_lock)
                {
                    if (epoch != _epoch)
                    {
                        return; // timed out (or the processor stopped): whoever bumped the epoch failed this step's sequences
                    }

                    _stepRunning = false;
                    if (failure is not null)
                    {
                        for (int i = 0; i < count; i++)
                        {
                            if (TryEndLocked(buffers.Sequences[i]))
                            {
                                leaving.Add((buffers.Sequences[i], SequenceEnd.Failed, null, Outcomes.Failed));
                            }
                        }
                    }
                }

                TimeSpan duration = _time.GetElapsedTime(now, end);
                _telemetry.StepFinished(count, duration, failure is null ? Outcomes.Success : Outcomes.Failure);
                if (failure is not null)
                {
                    Log.StepFailed(_logger, Name, count, failure);
                    var error = new BatchExecutionException($"The generation step of '{Name}' failed for the {count} sequence(s) in it; see the inner exception.", failure);
                    for (int i = 0; i < leaving.Count; i++)
                    {
                        leaving[i] = leaving[i] with { Error = error };
                    }

                    EndAll(leaving);
                }
                else
                {
                    Deliver(buffers, count, done, end);
                }

                Array.Clear(buffers.Sequences, 0, count);
            }
        }
        catch (Exception ex)
        {
            LoopFailed(ex);
        }
    }

    /// <summary>Calls the step. The runner runs in the clean ExecutionContext (it was queued without flowing one); what
    /// the step's synchronous part writes to AsyncLocals is undone before the runner awaits, so nothing of one step
    /// leaks into the next, nor into the consumers' continuations.</summary>
    private ValueTask InvokeStep(StepBuffers buffers, int count, CancellationToken token)
    {
        try
        {
            return _step(buffers.States.AsMemory(0, count), buffers.Tokens.AsMemory(0, count), buffers.Finished.AsMemory(0, count), token);
        }
        finally
        {
            if (ExecutionContext.Capture() != CleanContext.Instance)
            {
                ExecutionContext.Restore(CleanContext.Instance);
            }
        }
    }

    /// <summary>The step boundary: sequences that finished leave, waiting ones join, expired ones fail, and the active
    /// sequences with room in their buffers are copied into <paramref name="buffers"/>. Returns how many will step.</summary>
    private int BoundaryLocked(StepBuffers buffers, List<Sequence<TPrompt, TState, TToken>> done,
        List<(Sequence<TPrompt, TState, TToken>, SequenceEnd, Exception?, string)> leaving, long now)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        foreach (Sequence<TPrompt, TState, TToken> sequence in done)
        {
            if (TryEndLocked(sequence))
            {
                leaving.Add((sequence, SequenceEnd.Completed, null, Outcomes.Completed));
            }
        }

        done.Clear();
        if (_state != GenerationState.Stopped)
        {
            while (_activeCount < _maxSequences && _lanes.TakeNext(_maxActiveWeight - _activeWeight) is { } joining)
            {
                if (joining.Deadline != Timestamps.Never)
                {
                    _liveDeadlines--;
                }

                joining.State = SequenceState.Active;
                _activeCount++;
                _activeWeight += joining.Weight;
                _active.Add(joining);
            }
        }

        ExpireLocked(now, leaving);

        // Compact the active list (ended sequences leave) and gather the ones that step.
        int kept = 0, count = 0;
        buffers.EnsureCapacity(_activeCount);
        for (int i = 0; i < _active.Count; i++)
        {
            Sequence<TPrompt, TState, TToken> sequence = _active[i];
            if (sequence.State != SequenceState.Active)
            {
                continue;
            }

            _active[kept++] = sequence;
            if (sequence.TryKeepStepping())
            {
                buffers.Sequences[count] = sequence;
                buffers.States[count] = sequence.StepState;
                buffers.Finished[count] = false;
                count++;
            }
        }

        _active.RemoveRange(kept, _active.Count - kept);
        Debug.Assert(kept == _activeCount && _activeWeight >= 0);
        _parkedCount = kept - count;
        return count;
    }

    /// <summary>Hands each sequence its token (after copying its advanced state back); those done producing leave at
    /// the next boundary.</summary>
    private void Deliver(StepBuffers buffers, int count, List<Sequence<TPrompt, TState, TToken>> done, long now)
    {
        bool latency = _telemetry.TokenLatencyEnabled;
        for (int i = 0; i < count; i++)
        {
            Sequence<TPrompt, TState, TToken> sequence = buffers.Sequences[i];
            sequence.StepState = buffers.States[i];
            buffers.States[i] = default!;
            bool finished = sequence.Deliver(buffers.Tokens[i], buffers.Finished[i], _maxTokens, out bool delivered);
            buffers.Tokens[i] = default!;
            if (delivered && latency)
            {
                _telemetry.TokenProduced(sequence.Produced == 1, _time.GetElapsedTime(sequence.LastTokenTimestamp, now));
                sequence.LastTokenTimestamp = now;
            }

            if (finished)
            {
                done.Add(sequence);
            }
        }
    }

    private void EndAll(List<(Sequence<TPrompt, TState, TToken> Sequence, SequenceEnd End, Exception? Error, string Outcome)> leaving)
    {
        foreach (var (sequence, end, error, outcome) in leaving)
        {
            EndOutsideLock(sequence, end, error, outcome);
        }

        leaving.Clear();
    }

    /// <summary>Fails the queued sequences whose queue timeout passed (lazy deletion: entries of sequences that joined
    /// or ended are dropped as they reach the top; the heap is rebuilt when those outnumber the live ones).</summary>
    private void ExpireLocked(long now, List<(Sequence<TPrompt, TState, TToken>, SequenceEnd, Exception?, string)> leaving)
    {
        while (_deadlines.TryPeek(out Sequence<TPrompt, TState, TToken>? sequence, out long deadline))
        {
            if (sequence.State == SequenceState.Queued && sequence.Deadline == deadline)
            {
                if (deadline > now)
                {
                    break;
                }

                TryEndLocked(sequence);
                leaving.Add((sequence, SequenceEnd.Failed, new TimeoutException(
                    $"The sequence waited longer than its RequestOptions.Timeout ({sequence.QueueTimeout}) to join a step of '{Name}'; it never ran."), Outcomes.Expired));
            }

            _deadlines.Dequeue();
        }

        if (_deadlines.Count > 2 * _liveDeadlines + 64)
        {
            var live = new List<(Sequence<TPrompt, TState, TToken>, long)>(_liveDeadlines);
            foreach (var (entry, due) in _deadlines.UnorderedItems)
            {
                if (entry.State == SequenceState.Queued && entry.Deadline == due)
                {
                    live.Add((entry, due));
                }
            }

            _deadlines.Clear();
            _deadlines.EnqueueRange(live);
        }
    }

    private void ArmExpiry()
    {
        long next = Timestamps.Never;
        lock (_lock)
        {
            if (_liveDeadlines > 0 && _deadlines.TryPeek(out _, out long due))
            {
                next = due;
            }
        }

        _expiryTimer.ArmNoLaterThan(next);
    }

    private void OnExpiryTimer()
    {
        var leaving = new List<(Sequence<TPrompt, TState, TToken> Sequence, SequenceEnd End, Exception? Error, string Outcome)>();
        lock (_lock)
        {
            ExpireLocked(_time.GetTimestamp(), leaving);
        }

        EndAll(leaving);
        ArmExpiry();
    }

    /// <summary>The step timer fired: if the running step is past its deadline, give up on it (see the class remarks on epochs).</summary>
    private void OnStepTimer()
    {
        var leaving = new List<(Sequence<TPrompt, TState, TToken> Sequence, SequenceEnd End, Exception? Error, string Outcome)>();
        CancellationTokenSource? cancel = null;
        int stepped = 0;
        long rearm = Timestamps.Never;
        lock (_lock)
        {
            if (!_stepRunning)
            {
                return;
            }

            if (_time.GetTimestamp() < _stepDeadline)
            {
                rearm = _stepDeadline; // an earlier step's deadline fired; wait for this one's
            }
            else
            {
                stepped = _stepCount;
                StepBuffers abandoned = _buffers!;
                for (int i = 0; i < stepped; i++)
                {
                    if (TryEndLocked(abandoned.Sequences[i]))
                    {
                        leaving.Add((abandoned.Sequences[i], SequenceEnd.Failed, null, Outcomes.Failed));
                    }
                }

                TakeOverLocked(out cancel);
                _loopRunning = false;
                StartLoopLocked();
            }
        }

        if (rearm != Timestamps.Never)
        {
            _stepTimer.ArmNoLaterThan(rearm);
            return;
        }

        CancelQuietly(cancel);
        Log.StepTimedOut(_logger, Name, stepped, _stepTimeout);
        _telemetry.StepFinished(stepped, _stepTimeout, Outcomes.Timeout);
        var error = new TimeoutException($"A generation step of '{Name}' carrying this sequence ran longer than GenerationOptions.StepTimeout ({_stepTimeout}); the sequence was failed and the processor went on without it.");
        for (int i = 0; i < leaving.Count; i++)
        {
            leaving[i] = leaving[i] with { Error = error };
        }

        EndAll(leaving);
    }

    /// <summary>Leaves the running step to itself: a new epoch, new buffers and a new step token; the old token is
    /// returned for cancelling outside the lock.</summary>
    private void TakeOverLocked(out CancellationTokenSource? cancel)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        _epoch++;
        _stepRunning = false;
        _buffers = null;
        cancel = _stepCts;
        _stepCts = new CancellationTokenSource();
    }

    private static void CancelQuietly(CancellationTokenSource? cancel)
    {
        try
        {
            cancel?.Cancel();
        }
        catch (Exception)
        {
            // A step's cancellation callback threw; the step is abandoned anyway.
        }
    }
}
