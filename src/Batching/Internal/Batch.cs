using System.Diagnostics;
using System.Runtime.CompilerServices;
using Batching.Diagnostics;

namespace Batching.Internal;

/// <summary>
/// One handler call's worth of items, with pooled input/output buffers and its own cancellation source and
/// timeout timer. A batch object is reused for the life of the processor; <see cref="Generation"/> tells its
/// uses apart.
/// </summary>
/// <remarks>
/// <para>Three parties may try to complete the batch's callers: the handler's return, the execution-timeout
/// timer, and shutdown. Each item moves from InBatch to Completed by compare-and-swap, so exactly one of them
/// completes any caller. What needs the <see cref="_sync"/> lock is the batch's own life: the timer and shutdown
/// iterate <see cref="Items"/>, and <see cref="Finish"/> releases those items (which lets them be recycled), so
/// both happen under the lock and a late timer can never touch a recycled request.</para>
/// <para>Lock order: the engine's lock may be held when this one is taken, never the other way round.</para>
/// </remarks>
internal sealed class Batch<TIn, TOut> : IThreadPoolWorkItem
{
    private static readonly TimerCallback s_onTimeout = static state => { var batch = (Batch<TIn, TOut>)state!; batch._engine.OnBatchTimedOut(batch); };

    private readonly BatchEngine<TIn, TOut> _engine;
    private readonly object _sync = new();
    private readonly Action _onHandlerCompleted;
    private CancellationTokenSource _cts = new();
    private ITimer? _timer;
    private ConfiguredValueTaskAwaitable.ConfiguredValueTaskAwaiter _awaiter;
    private long _startTimestamp;
    private int _live;
    private bool _running;
    private bool _callersReleased;
    private bool _slotReleased;
    private bool _cancelRequested;
    private int _timerArmed;
    private string? _outcome;
    private Activity? _activity;

    public Batch(BatchEngine<TIn, TOut> engine, int capacity)
    {
        _engine = engine;
        Inputs = new TIn[capacity];
        Outputs = new TOut[capacity];
        Items = new Request<TIn, TOut>[capacity];
        _onHandlerCompleted = OnHandlerCompletedAsynchronously;
    }

    public TIn[] Inputs { get; }

    public TOut[] Outputs { get; }

    public Request<TIn, TOut>[] Items { get; }

    public int Count { get; private set; }

    public int Generation { get; private set; }

    /// <summary>Marks the batch running with <paramref name="count"/> items already placed in <see cref="Items"/>; called under the engine lock.</summary>
    public void Begin(int count)
    {
        lock (_sync)
        {
            Count = count;
            _live = count;
            _running = true;
            _callersReleased = false;
            _slotReleased = false;
            _outcome = null;
            _startTimestamp = _engine.Time.GetTimestamp();
            if (_cancelRequested)
            {
                // Its cancellation may still be in progress on another thread: leave that source alone.
                _cancelRequested = false;
                _cts = new CancellationTokenSource();
            }
            else if (!_cts.TryReset())
            {
                _cts.Dispose();
                _cts = new CancellationTokenSource();
            }
        }
    }

    void IThreadPoolWorkItem.Execute() => Run();

    /// <summary>Copies inputs, clears outputs and starts the handler. Runs outside every lock.</summary>
    public void Run()
    {
        int count = Count;
        for (int i = 0; i < count; i++)
        {
            Inputs[i] = Items[i].Input;
        }

        // Unwritten outputs then read as default, never as another caller's result from an earlier batch.
        Array.Clear(Outputs, 0, count);
        ArmTimer();
        RecordStart(count);

        CancellationToken token = _cts.Token;
        if (token.IsCancellationRequested)
        {
            // Every caller cancelled before the handler started: nothing to compute.
            OnHandlerDone(null);
            return;
        }

        ValueTask pending;
        Activity? previous = Activity.Current;
        try
        {
            // The handler's own spans (a GPU launch, a bulk query) nest under the batch's activity.
            if (_activity is not null)
            {
                Activity.Current = _activity;
            }

            pending = _engine.Handler(Inputs.AsMemory(0, count), Outputs.AsMemory(0, count), token);
        }
        catch (Exception ex)
        {
            OnHandlerDone(ex);
            return;
        }
        finally
        {
            if (_activity is not null)
            {
                Activity.Current = previous;
            }
        }

        if (pending.IsCompletedSuccessfully)
        {
            OnHandlerDone(null);
            return;
        }

        _awaiter = pending.ConfigureAwait(false).GetAwaiter();
        if (_awaiter.IsCompleted)
        {
            OnHandlerCompletedAsynchronously();
        }
        else
        {
            _awaiter.UnsafeOnCompleted(_onHandlerCompleted);
        }
    }

    private void RecordStart(int count)
    {
        ProcessorTelemetry telemetry = _engine.Telemetry;
        telemetry.BatchStarted(count);
        if (telemetry.QueueWaitEnabled)
        {
            for (int i = 0; i < count; i++)
            {
                telemetry.QueueWait(_engine.Time.GetElapsedTime(Items[i].EnqueuedTimestamp, _startTimestamp));
            }
        }

        _activity = telemetry.StartBatchActivity(Items, count);
    }

    /// <summary>Cancellation of one of this batch's items while it runs; cancels the handler once nobody is left.</summary>
    public void OnItemCanceled(int generation)
    {
        CancellationTokenSource? cts = null;
        lock (_sync)
        {
            if (generation == Generation && _running && --_live == 0)
            {
                cts = TakeCancellationLocked();
            }
        }

        Cancel(cts);
    }

    /// <summary>
    /// Fails the callers nobody completed yet and marks the slot as released; false when this use already finished
    /// or already gave up. <paramref name="cts"/> is the cancellation source to cancel once every lock is released
    /// (null when cancellation was already requested, for instance because every caller left).
    /// Called under the engine lock (timeout and shutdown), which is what keeps the slot accounting exact.
    /// </summary>
    public bool GiveUpLocked(Func<int, Exception> failure, bool onlyIfTimedOut, out CancellationTokenSource? cts)
    {
        int failed = 0;
        bool gaveUp = GiveUpLocked(failure, onlyIfTimedOut, ref failed, out cts);
        _engine.Telemetry.RequestsFinished(Outcomes.Failed, failed);
        return gaveUp;
    }

    private bool GiveUpLocked(Func<int, Exception> failure, bool onlyIfTimedOut, ref int failed, out CancellationTokenSource? cts)
    {
        cts = null;
        lock (_sync)
        {
            if (!_running || _callersReleased)
            {
                if (onlyIfTimedOut)
                {
                    Volatile.Write(ref _timerArmed, 0); // expired while idle: the next use arms it afresh
                }

                return false;
            }

            if (onlyIfTimedOut)
            {
                TimeSpan timeout = _engine.ExecutionTimeout;
                TimeSpan elapsed = _engine.Time.GetElapsedTime(_startTimestamp);
                if (elapsed < timeout)
                {
                    // Armed by an earlier use of this batch: the current use has time left.
                    _timer?.Change(timeout - elapsed, Timeout.InfiniteTimeSpan);
                    return false;
                }

                Volatile.Write(ref _timerArmed, 0);
            }

            _callersReleased = true;
            _slotReleased = true;
            _outcome = onlyIfTimedOut ? Outcomes.Timeout : Outcomes.Failure;
            for (int i = 0; i < Count; i++)
            {
                if (Items[i].TryClaimFromBatch())
                {
                    Items[i].SetException(failure(Count));
                    failed++;
                }
            }

            cts = TakeCancellationLocked();
            return true;
        }
    }

    private CancellationTokenSource? TakeCancellationLocked()
    {
        if (_cancelRequested)
        {
            return null;
        }

        _cancelRequested = true;
        return _cts;
    }

    /// <summary>Cancels outside every lock: the handler's callbacks run inline and may call back into the processor.</summary>
    public static void Cancel(CancellationTokenSource? cts)
    {
        if (cts is null)
        {
            return;
        }

        try
        {
            cts.Cancel();
        }
        catch (AggregateException)
        {
            // A handler's cancellation callback threw; that is the handler's problem, not the callers'.
        }
    }

    private void OnHandlerCompletedAsynchronously()
    {
        Exception? error = null;
        try
        {
            _awaiter.GetResult();
        }
        catch (Exception ex)
        {
            error = ex;
        }

        _awaiter = default;
        OnHandlerDone(error);
    }

    private void OnHandlerDone(Exception? error)
    {
        TimeSpan duration = _engine.Time.GetElapsedTime(_startTimestamp);
        if (error is not null && !_cts.IsCancellationRequested)
        {
            Log.BatchFailed(_engine.Logger, _engine.DisplayName, Count, error);
        }

        if (error is not null && _engine.PoisonIsolationDepth > 0 && Count > 1 && !_cts.IsCancellationRequested)
        {
            _ = IsolateThenFinishAsync(error, duration);
            return;
        }

        CompleteRange(0, Count, error);
        Finish(duration, error is null);
    }

    /// <summary>Hands outputs (or the failure) to the callers of items [start, end) that nobody completed yet.</summary>
    private void CompleteRange(int start, int end, Exception? error)
    {
        int completed = 0, failed = 0;
        lock (_sync)
        {
            if (_callersReleased)
            {
                return;
            }

            for (int i = start; i < end; i++)
            {
                Request<TIn, TOut> item = Items[i];
                if (!item.TryClaimFromBatch())
                {
                    continue;
                }

                if (error is not null)
                {
                    item.SetException(_engine.HandlerFailure(error, end - start));
                    failed++;
                }
                else if (_engine.IsMissing(Outputs[i]))
                {
                    item.SetException(_engine.MissingOutput(i, end - start));
                    failed++;
                }
                else
                {
                    item.SetResult(Outputs[i]);
                    completed++;
                }
            }
        }

        _engine.Telemetry.RequestsFinished(Outcomes.Completed, completed);
        _engine.Telemetry.RequestsFinished(Outcomes.Failed, failed);
    }

    /// <summary>
    /// Poison isolation: rerun the failed batch in halves, recursively, so that only the inputs that make the
    /// handler fail fail their callers. Off the hot path: it allocates.
    /// </summary>
    private async Task IsolateThenFinishAsync(Exception firstError, TimeSpan duration)
    {
        try
        {
            await IsolateAsync(0, Count, _engine.PoisonIsolationDepth, firstError).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            CompleteRange(0, Count, ex);
        }

        Finish(duration, succeeded: false);
    }

    private async Task IsolateAsync(int start, int end, int depth, Exception? failure)
    {
        if (failure is null)
        {
            if (_cts.IsCancellationRequested)
            {
                return; // Timed out, shut down or every caller cancelled: the callers are already released.
            }

            Array.Clear(Outputs, start, end - start);
            try
            {
                await _engine.Handler(Inputs.AsMemory(start, end - start), Outputs.AsMemory(start, end - start), _cts.Token).ConfigureAwait(false);
                CompleteRange(start, end, null);
                return;
            }
            catch (Exception ex)
            {
                failure = ex;
            }
        }

        if (depth == 0 || end - start <= 1 || _cts.IsCancellationRequested)
        {
            CompleteRange(start, end, failure);
            return;
        }

        int middle = start + (end - start) / 2;
        await IsolateAsync(start, middle, depth - 1, null).ConfigureAwait(false);
        await IsolateAsync(middle, end, depth - 1, null).ConfigureAwait(false);
    }

    private void Finish(TimeSpan duration, bool succeeded)
    {
        int count = Count;
        bool slotHeld;
        string outcome;
        lock (_sync)
        {
            _running = false;
            slotHeld = !_slotReleased;
            outcome = _outcome ?? (succeeded ? Outcomes.Success : _cts.IsCancellationRequested ? Outcomes.Cancelled : Outcomes.Failure);
            for (int i = 0; i < count; i++)
            {
                Items[i].Release();
                Items[i] = null!;
            }

            Generation++;
        }

        if (RuntimeHelpers.IsReferenceOrContainsReferences<TIn>())
        {
            Array.Clear(Inputs, 0, count);
        }

        if (RuntimeHelpers.IsReferenceOrContainsReferences<TOut>())
        {
            Array.Clear(Outputs, 0, count);
        }

        _engine.Telemetry.BatchFinished(duration, outcome);
        if (_activity is { } activity)
        {
            _activity = null;
            activity.SetTag(BatchingTelemetry.BatchOutcomeTag, outcome);
            if (outcome != Outcomes.Success)
            {
                activity.SetStatus(ActivityStatusCode.Error, outcome);
            }

            activity.Stop();
        }

        _engine.OnBatchFinished(this, count, duration, succeeded, slotHeld);
    }

    private void ArmTimer()
    {
        TimeSpan timeout = _engine.ExecutionTimeout;
        if (timeout == Timeout.InfiniteTimeSpan)
        {
            return;
        }

        // Timer changes take a process-wide lock and were the largest fixed cost of a small batch, so the timer is
        // armed only when it is not already pending. Finishing a batch leaves it armed; if it then fires during a
        // later use, GiveUpLocked sees that use's own start time and re-arms for the rest of its timeout. At most
        // one expiry per ExecutionTimeout per batch object, instead of two timer changes per batch.
        _timer ??= _engine.Time.CreateTimer(s_onTimeout, this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        if (Interlocked.Exchange(ref _timerArmed, 1) == 0)
        {
            _timer.Change(timeout, Timeout.InfiniteTimeSpan);
        }
    }

    public void DisposeResources()
    {
        _timer?.Dispose();
    }
}
