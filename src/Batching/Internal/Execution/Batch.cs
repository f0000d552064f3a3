using System.Buffers;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Batching.Diagnostics;
using Batching.Internal.Admission;
using Batching.Internal.Timing;

namespace Batching.Internal.Execution;

/// <summary>
/// One handler call's worth of requests: its buffers (rented to the size of the batch), its cancellation source, its
/// execution-timeout timer, and the inline resumption of its callers. A batch object is pooled by its processor;
/// <see cref="Generation"/> tells its uses apart.
/// </summary>
/// <remarks>
/// <para>Life of one use (see <see cref="BatchState"/>): the processor <em>starts</em> it under its lock, taking a
/// slot; the handler runs on a pool thread (never on the dispatcher) in a clean ExecutionContext; when it returns the
/// processor <em>completes</em> it (slot freed) and the batch resumes its callers; or the processor <em>times it
/// out</em> or <em>abandons</em> it first (slot freed, callers failed, handler cancelled but perhaps still running).
/// The batch <em>retires</em> once the handler has returned and no resumer is left, and only then are its buffers
/// reused, so a handler that ignores its token can never see them change under it.</para>
/// <para>Exactly one party completes each caller: every path claims a request by compare-and-swap
/// (<see cref="Request{TIn, TOut}.TryClaimFromBatch"/>) before completing it.</para>
/// <para><b>Resuming callers inline.</b> A batch that ends normally runs its callers' continuations itself, one after
/// another, on the thread that finished the handler: one thread-pool work item per batch instead of one per caller.
/// The risk is a continuation that blocks (a caller that waits synchronously on something, even on a sibling's
/// result): its siblings would wait behind it. The claim index <see cref="_nextToResume"/> is shared, so more workers
/// can join: the <see cref="ResumeWatch{TIn, TOut}"/> on the shared precise thread looks every
/// <see cref="ResumeWatch{TIn, TOut}.Period"/> and, while callers are still unclaimed, queues one more helper that
/// resumes them. A blocking caller delays its siblings by about a millisecond, never forever; a caller that blocks
/// on a sibling's result is released as soon as a helper resumes that sibling; a long burst of slow continuations
/// spreads over more threads.</para>
/// </remarks>
internal sealed class Batch<TIn, TOut> : IThreadPoolWorkItem
{
    private static readonly ContextCallback s_invokeHandler = static s => ((Batch<TIn, TOut>)s!).InvokeWholeBatch();
    private static readonly ContextCallback s_invokeRange = static s => ((Batch<TIn, TOut>)s!).InvokeRange();
    private static readonly ContextCallback s_handlerReturned = static s => ((Batch<TIn, TOut>)s!).HandlerReturned(mayContinue: false);
    private static readonly ContextCallback s_awaitedHandlerReturned = static s => ((Batch<TIn, TOut>)s!).AwaitedHandlerReturned(mayContinue: false);

    /// <summary>How many batches one pool thread runs back to back (each one's callers, then the next) before it hands
    /// the next to a fresh work item, so that other work queued behind it gets its turn.</summary>
    private const int MaxRoundsPerWorkItem = 64;

    private readonly BatchContext<TIn, TOut> _context;
    private readonly object _processor;
    private readonly Func<int, bool> _isRunning;
    private ExecutionContext _handlerContext = CleanContext.Instance;
    private readonly ResumeWatch<TIn, TOut> _watch;
    private readonly Action _onHandlerCompleted;
    private readonly CompleteOnPool _completeOnPool;
    private readonly Lock _resumeSync = new();

    private int _state;
    private int _generation;
    // The parts: request, first slot in the batch, first index within the request's items (0 for a single item). A
    // part's length runs to the next part's first slot.
    private Request<TIn, TOut>[] _parts = [];
    private int[] _partSlots = [];
    private int[] _partStarts = [];
    private int _partCount;
    private TIn[] _inputs = [];
    private TOut[] _outputs = [];
    private int _count;

    // Poison isolation's verdict per slot: the handler failure of the smallest rerun that held the slot and failed, and
    // that rerun's size; null where the slot's output stands. Only once isolation ran (_isolated).
    private Exception?[] _slotErrors = [];
    private int[] _slotErrorSizes = [];
    private bool _isolated;
    private int _live;
    private long _startTimestamp;
    private long _returnedTimestamp;
    private TimeSpan _duration;

    // The source is replaced, never reset, once it was handed out to be cancelled: the Cancel may still be running.
    private CancellationTokenSource _cts = new();
    private bool _ctsHandedOut;

    private DeadlineTimer? _timeoutTimer;

    private Activity? _activity;
    private ValueTask _pendingHandler;
    private ConfiguredValueTaskAwaitable.ConfiguredValueTaskAwaiter _awaiter;
    private Exception? _handlerError;
    private int _rangeStart, _rangeLength;

    // Resumption (Completing only): the shared claim index, workers inside the loop, and whether the dispatcher is
    // holding partial batches for this burst of returning callers.
    private int _nextToResume;
    private int _resumers;
    private int _helpersWaiting;
    private bool _burstOpen; // guarded by _resumeSync once Completing

    public Batch(BatchContext<TIn, TOut> context, object processor)
    {
        _context = context;
        _processor = processor;
        _isRunning = generation => State == BatchState.Running && Generation == generation;
        _watch = new ResumeWatch<TIn, TOut>(this);
        _onHandlerCompleted = OnHandlerCompleted;
        _completeOnPool = new CompleteOnPool(this);
    }

    public BatchState State => (BatchState)Volatile.Read(ref _state);

    public int Generation => Volatile.Read(ref _generation);

    public int Count => _count;

    /// <summary>When the current use started; read under the processor's lock while the batch is running.</summary>
    public long StartTimestamp => _startTimestamp;

    /// <summary>Start: takes up to <paramref name="count"/> items from <paramref name="queue"/> by its fair share (whole
    /// single-item requests, and parts of multi-item ones), within <paramref name="maxWeight"/> when
    /// <paramref name="weighted"/>. The inputs are copied here, under the lock: a multi-item caller may be released (it
    /// cancelled) at any moment after it, and its buffer must not be read after that.</summary>
    public void StartLocked(AdmissionQueue<TIn, TOut> queue, int count, bool weighted, long maxWeight, long now)
    {
        Debug.Assert(queue.Sync.IsHeldByCurrentThread && State == BatchState.Idle && count >= 1);
        EnsureCapacity(count);
        int generation = _generation;
        int slot = 0, parts = 0, blocked = 0;
        long weightLeft = maxWeight;
        while (slot < count && queue.TryTakePartLocked(count - slot, weighted, ref weightLeft, ref blocked, out Request<TIn, TOut> request, out int start, out int length))
        {
            _parts[parts] = request;
            _partSlots[parts] = slot;
            _partStarts[parts] = start;
            parts++;
            if (request.IsMulti)
            {
                request.Inputs.Span.Slice(start, length).CopyTo(_inputs.AsSpan(slot, length));
            }
            else
            {
                request.Batch = this;
                request.BatchGeneration = generation;
                _inputs[slot] = request.Input;
            }

            slot += length;
        }

        Debug.Assert(slot >= 1, "a batch was started with nothing to take");
        count = slot;
        _partCount = parts;
        _isolated = false;

        // A handler that has gone asynchronous may call back from a continuation: give this use a marker of its own.
        _handlerContext = _context.Shape.CompletesAsynchronously ? HandlerScope.ForUse(_processor, _isRunning, generation) : CleanContext.Instance;
        _count = count;
        _live = parts;
        _startTimestamp = now;
        _handlerError = null;
        _nextToResume = 0;
        if (_ctsHandedOut)
        {
            _cts = new CancellationTokenSource();
            _ctsHandedOut = false;
        }
        else if (!_cts.TryReset())
        {
            _cts.Dispose();
            _cts = new CancellationTokenSource();
        }

        ArmTimeoutLocked(now);
        SetState(BatchState.Running);
    }

    void IThreadPoolWorkItem.Execute() => RunHere(this);

    /// <summary>
    /// Runs <paramref name="batch"/> on this pool thread and, while each handler completes synchronously, the batches
    /// that follow: after a batch has resumed its callers (who mostly queued their next items meanwhile), this thread
    /// runs the dispatcher and the next batch itself instead of handing them to two more work items. The dispatcher
    /// role is released before the next handler starts, so a handler that blocks here blocks only this thread.
    /// </summary>
    public static void RunHere(Batch<TIn, TOut>? batch)
    {
        for (int round = 1; batch is not null; round++)
        {
            batch = batch.RunOnce(mayContinue: round < MaxRoundsPerWorkItem);
        }
    }

    /// <summary>The idle fast path: runs the handler on the caller's thread; never continues with another batch there.</summary>
    public void RunInline() => RunOnce(mayContinue: false);

    /// <summary>Runs the handler, outside every lock. Returns the next batch for this thread to run, if any.</summary>
    private Batch<TIn, TOut>? RunOnce(bool mayContinue)
    {
        // Unwritten outputs then read as default, never as another caller's result from an earlier batch.
        Array.Clear(_outputs, 0, _count);
        if (!_cts.IsCancellationRequested)
        {
            ExecutionContext.Run(_handlerContext, s_invokeHandler, this);
            if (_handlerError is null && !_pendingHandler.IsCompleted)
            {
                _context.Shape.CompletesAsynchronously = true;
                _awaiter = _pendingHandler.ConfigureAwait(false).GetAwaiter();
                _pendingHandler = default;
                _context.Owner.OnHandlerPending(pending: true);
                // Nothing of this batch may be touched after this call: the handler may complete, and the batch retire, at once.
                _awaiter.UnsafeOnCompleted(_onHandlerCompleted);
                return null;
            }

            ObservePendingHandler();
        }

        // Else every caller cancelled before the handler started: nothing to compute.
        return ReturnedHere(mayContinue);
    }

    /// <summary>Completion on this thread: directly when it is a pool thread already in the clean context (and may go on
    /// with the next batch), else inside the clean context.</summary>
    private Batch<TIn, TOut>? ReturnedHere(bool mayContinue)
    {
        if (mayContinue && ExecutionContext.Capture() == CleanContext.Instance)
        {
            return HandlerReturned(mayContinue: true);
        }

        CleanContext.Run(s_handlerReturned, this);
        return null;
    }

    /// <summary>In the handler's context: telemetry for the start, then the handler call.</summary>
    private void InvokeWholeBatch()
    {
        RecordStart();
        InvokeHandler(0, _count);
    }

    /// <summary>In the handler's context: one rerun of poison isolation, inside the batch's activity.</summary>
    private void InvokeRange()
    {
        if (_activity is not null)
        {
            Activity.Current = _activity;
        }

        InvokeHandler(_rangeStart, _rangeLength);
    }

    private void InvokeHandler(int start, int length)
    {
        object? previous = HandlerScope.EnterInvocation(_processor);
        try
        {
            _pendingHandler = _context.Handler(_inputs.AsMemory(start, length), _outputs.AsMemory(start, length), _cts.Token);
        }
        catch (Exception ex)
        {
            _pendingHandler = default;
            _handlerError = ex;
        }
        finally
        {
            HandlerScope.ExitInvocation(previous);
        }
    }

    private void RecordStart()
    {
        ProcessorTelemetry telemetry = _context.Telemetry;
        telemetry.BatchStarted(_count);
        if (telemetry.QueueWaitEnabled)
        {
            for (int j = 0; j < _partCount; j++)
            {
                telemetry.QueueWait(_context.Time.GetElapsedTime(_parts[j].ArrivalTimestamp, _startTimestamp));
            }
        }

        // In the handler's clean context Activity.Current is null, so the batch's activity is a root: never a child of
        // the previous batch or of whoever built the processor. It links to its callers' activities instead.
        _activity = telemetry.StartBatchActivity(_parts, _partCount, _count);
    }

    private void ObservePendingHandler()
    {
        try
        {
            _pendingHandler.GetAwaiter().GetResult();
        }
        catch (Exception ex)
        {
            _handlerError ??= ex;
        }

        _pendingHandler = default;
    }

    /// <summary>The handler's task completed, on whatever thread completed it.</summary>
    private void OnHandlerCompleted()
    {
        if (!Thread.CurrentThread.IsThreadPoolThread)
        {
            // A thread of the handler's own (a driver callback, a UI or timer thread that set a TaskCompletionSource):
            // the callers are not resumed there; a pool thread does it.
            ThreadPool.UnsafeQueueUserWorkItem(_completeOnPool, preferLocal: false);
        }
        else if (ExecutionContext.Capture() == CleanContext.Instance)
        {
            RunHere(AwaitedHandlerReturned(mayContinue: true));
        }
        else
        {
            // Inside the handler's own async method (its context): finish in the clean context and leave the next batch
            // to the dispatcher.
            CleanContext.Run(s_awaitedHandlerReturned, this);
        }
    }

    /// <summary>Completes a batch whose handler finished on a thread outside the pool.</summary>
    private sealed class CompleteOnPool(Batch<TIn, TOut> batch) : IThreadPoolWorkItem
    {
        public void Execute() => RunHere(batch.AwaitedHandlerReturned(mayContinue: true));
    }

    private Batch<TIn, TOut>? AwaitedHandlerReturned(bool mayContinue)
    {
        _context.Owner.OnHandlerPending(pending: false);
        try
        {
            _awaiter.GetResult();
        }
        catch (Exception ex)
        {
            _handlerError = ex;
        }

        _awaiter = default;
        return HandlerReturned(mayContinue);
    }

    /// <summary>The handler returned (or threw). Runs in the clean context. Returns the next batch for this thread.</summary>
    private Batch<TIn, TOut>? HandlerReturned(bool mayContinue)
    {
        _returnedTimestamp = _context.Time.GetTimestamp();
        _duration = _context.Time.GetElapsedTime(_startTimestamp, _returnedTimestamp);
        Exception? error = _handlerError;
        bool cancelled = _cts.IsCancellationRequested;
        if (error is not null && !cancelled)
        {
            Log.BatchFailed(_context.Logger, _context.Name, _count, error);
        }

        if (error is not null && !cancelled && _context.PoisonIsolationDepth > 0 && _count > 1 && State == BatchState.Running)
        {
            _ = IsolateThenFinishAsync(error);
            return null;
        }

        return Finish(error is null, mayContinue);
    }

    private Batch<TIn, TOut>? Finish(bool succeeded, bool mayContinue)
    {
        BatchState state = _context.Owner.OnHandlerReturned(this, _duration, succeeded);
        string outcome = state switch
        {
            BatchState.TimedOut => Outcomes.Timeout,
            BatchState.Abandoned => Outcomes.Failure,
            _ when succeeded => Outcomes.Success,
            _ => _cts.IsCancellationRequested ? Outcomes.Cancelled : Outcomes.Failure,
        };
        _context.Telemetry.BatchFinished(_duration, outcome);
        if (_activity is { } activity)
        {
            _activity = null;
            _context.Telemetry.StopBatchActivity(activity, outcome);
        }

        if (state == BatchState.Completing)
        {
            return ResumeCallers(mayContinue);
        }

        Retire();
        return null;
    }

    /// <summary>Complete (under the processor's lock, which also frees the slot): Running to Completing. A burst of
    /// inline resumptions opens: until it closes the dispatcher counts the slot as taken and holds partial batches,
    /// because the callers about to be resumed will mostly queue again at once.</summary>
    public void CompleteLocked()
    {
        Debug.Assert(State == BatchState.Running);
        _resumers = 1;
        _helpersWaiting = 0;
        _burstOpen = true;
        SetState(BatchState.Completing);
    }

    private Batch<TIn, TOut>? ResumeCallers(bool mayContinue)
    {
        // Claim every caller first, so the outcome counts are recorded before any caller can observe its result, and a
        // caller cancelled from now on is simply too late.
        int parts = _partCount, completed = 0, failed = 0;
        bool failedWhole = !_isolated && _handlerError is not null;
        for (int j = 0; j < parts; j++)
        {
            Request<TIn, TOut> request = _parts[j];
            if (request.IsMulti)
            {
                continue; // counted once, when its call completes
            }

            int slot = _partSlots[j];
            if (!request.TryClaimFromBatch())
            {
                // Completed already (cancelled while the batch ran): nothing to resume, and nothing else refers to it.
                request.ReleaseEngineReference();
                _parts[j] = null!;
            }
            else if (failedWhole || (_isolated && _slotErrors[slot] is not null) || _context.IsMissing(_outputs[slot]))
            {
                failed++;
            }
            else
            {
                completed++;
            }
        }

        _context.Telemetry.RequestsFinished(Outcomes.Completed, completed);
        _context.Telemetry.RequestsFinished(Outcomes.Failed, failed);
        _watch.Start(_generation, _context.Time == TimeProvider.System ? _returnedTimestamp : Stopwatch.GetTimestamp());
        return RunResumeLoop(mayContinue, _returnedTimestamp);
    }

    /// <summary>One resumer: takes claimed callers by index and completes each inline, until none is left. Also run by
    /// helpers. The last resumer out retires the batch and, if it may, runs the dispatcher here for the next batch.</summary>
    internal Batch<TIn, TOut>? RunResumeLoop(bool mayContinue, long now)
    {
        int count = _partCount;
        TimeProvider time = _context.Time;
        var clock = ResumeClock.Enter(_context.Owner, now);
        int resumed = 0;
        while (true)
        {
            int i = Interlocked.Increment(ref _nextToResume) - 1;
            if (i >= count)
            {
                break;
            }

            Request<TIn, TOut>? request = _parts[i];
            if (request is null)
            {
                continue;
            }

            if (++resumed % ResumeClock.RefreshEvery == 0)
            {
                ResumeClock.Refresh(time.GetTimestamp());
            }

            try
            {
                if (request.IsMulti)
                {
                    DeliverPart(i, inline: true);
                }
                else
                {
                    Deliver(request, _partSlots[i], inline: true);
                }
            }
            catch (Exception ex)
            {
                // Only a custom awaiter's continuation can throw here; it must not cost its siblings their results.
                Log.ContinuationFailed(_context.Logger, _context.Name, ex);
            }

            request.ReleaseEngineReference();
        }

        ResumeClock.Exit(clock);
        bool last, closedBurst;
        lock (_resumeSync)
        {
            last = --_resumers == 0;
            closedBurst = _burstOpen;
            _burstOpen = false;
            if (last)
            {
                MarkIdleLocked();
            }

            AssertResumeInvariants();
        }

        // After the lock only the immutable context may be touched, unless this was the last resumer: another one could
        // retire the batch, and it be reused, at any moment.
        bool continueHere = mayContinue && last;
        if (closedBurst)
        {
            _context.Owner.OnResumeBurstClosed(signalDispatcher: !continueHere);
        }

        if (!last)
        {
            return null;
        }

        // The dispatcher runs before the batch object goes back to the pool, so it never looks idle in between.
        ClearBuffers(releaseRequests: false);
        Batch<TIn, TOut>? next = continueHere ? _context.Owner.TakeNextBatchHere() : null;
        _context.Owner.OnRetired(this);
        return next;
    }

    /// <summary>The watch's periodic look at a resumption, on the shared precise thread: must not block.</summary>
    /// <returns>Whether to look again after another period.</returns>
    /// <remarks>Callers still unclaimed a whole period after resumption began means the resumers are slow: one
    /// continuation blocks, or they are merely many and long. Either way one more helper joins per period (never while
    /// an earlier one is still waiting for a thread), so a blocked continuation delays its siblings by about a period
    /// and a long burst spreads over the pool's threads. Once every caller is claimed, the burst closes even if a
    /// continuation still runs: what callers do after their result is their own business, not the next batch's.</remarks>
    internal bool CheckResumeProgress(int generation)
    {
        bool closedBurst, spawn;
        lock (_resumeSync)
        {
            if (_generation != generation || State != BatchState.Completing || _resumers == 0)
            {
                return false; // finished
            }

            bool allClaimed = Volatile.Read(ref _nextToResume) >= _partCount;
            spawn = !allClaimed && _helpersWaiting == 0;
            if (spawn)
            {
                _resumers++;
                _helpersWaiting++;
            }

            closedBurst = _burstOpen;
            _burstOpen = false;
            AssertResumeInvariants();
        }

        // The dispatcher need not hold this slot, nor partial batches, for this burst any longer.
        if (closedBurst)
        {
            _context.Owner.OnResumeBurstClosed(signalDispatcher: true);
        }

        if (spawn)
        {
            ThreadPool.UnsafeQueueUserWorkItem(_watch, preferLocal: false);
        }

        return Volatile.Read(ref _nextToResume) < _partCount;
    }

    /// <summary>A helper queued by <see cref="CheckResumeProgress"/> got its thread.</summary>
    internal void RunHelper()
    {
        long now = _context.Time.GetTimestamp();
        lock (_resumeSync)
        {
            _helpersWaiting--;
            AssertResumeInvariants();
        }

        _ = RunResumeLoop(mayContinue: false, now);
    }

    /// <summary>Retire after a timeout or abandonment, once the handler has returned; the batch object may be reused.
    /// (A completed batch retires at the end of <see cref="RunResumeLoop"/>.)</summary>
    private void Retire()
    {
        Debug.Assert(State is BatchState.TimedOut or BatchState.Abandoned);
        lock (_resumeSync)
        {
            MarkIdleLocked();
        }

        // Their callers were failed by the timeout or the shutdown; the references are released only now, when no path
        // can touch the requests any more.
        ClearBuffers(releaseRequests: true);
        _context.Owner.OnRetired(this);
    }

    [Conditional("DEBUG")]
    private void AssertResumeInvariants()
    {
        Debug.Assert(_resumeSync.IsHeldByCurrentThread);
        Debug.Assert(_resumers >= 0 && _helpersWaiting >= 0 && _helpersWaiting <= _resumers, $"{_resumers} resumers, {_helpersWaiting} helpers waiting");
        Debug.Assert(State is BatchState.Completing || (State is BatchState.Idle && _resumers == 0), $"resuming in state {State}");
        Debug.Assert(!_burstOpen || State == BatchState.Completing);
    }

    private void MarkIdleLocked()
    {
        Debug.Assert(_resumeSync.IsHeldByCurrentThread);
        SetState(BatchState.Idle);
        _generation++;
    }

    private void ClearBuffers(bool releaseRequests)
    {
        int count = _count;
        if (releaseRequests)
        {
            for (int j = 0; j < _partCount; j++)
            {
                _parts[j].ReleaseEngineReference();
            }
        }

        Array.Clear(_parts, 0, _partCount);
        if (_isolated)
        {
            Array.Clear(_slotErrors, 0, count);
            _isolated = false;
        }

        if (RuntimeHelpers.IsReferenceOrContainsReferences<TIn>())
        {
            Array.Clear(_inputs, 0, count);
        }

        if (RuntimeHelpers.IsReferenceOrContainsReferences<TOut>())
        {
            Array.Clear(_outputs, 0, count);
        }

        _handlerError = null;
    }

    /// <summary>A running item's caller cancelled (under the processor's lock, after the caller was claimed).</summary>
    /// <returns>The source to cancel once the lock is released, when nobody is left to wait for the handler.</returns>
    public CancellationTokenSource? OnItemCanceledLocked(int generation)
    {
        if (generation != _generation || State != BatchState.Running || --_live != 0)
        {
            return null;
        }

        return TakeCancellationLocked();
    }

    /// <summary>The execution timer fired (under the processor's lock).</summary>
    /// <returns>Whether this use ran past ExecutionTimeout; if it has time left, the timer is re-armed for it.</returns>
    public bool ExecutionTimerFiredLocked(long now)
    {
        if (State != BatchState.Running)
        {
            return false;
        }

        long deadline = Timestamps.Add(_startTimestamp, _context.ExecutionTimeout, _context.Time.TimestampFrequency);
        if (now >= deadline)
        {
            return true;
        }

        // Armed by an earlier use of this batch object: the current use has time left.
        _timeoutTimer!.ArmNoLaterThan(deadline);
        return false;
    }

    /// <summary>TimeOut (under the processor's lock, which also frees the slot): claims every caller nobody completed yet
    /// into <paramref name="claimed"/>, for the processor to fail once the lock is released.</summary>
    public void TimeOutLocked(List<Removal<TIn, TOut>> claimed, out CancellationTokenSource? cts) => GiveUpLocked(BatchState.TimedOut, claimed, out cts);

    /// <summary>Abandon (shutdown, under the processor's lock, which also frees the slot): as <see cref="TimeOutLocked"/>.</summary>
    public void AbandonLocked(List<Removal<TIn, TOut>> claimed, out CancellationTokenSource? cts) => GiveUpLocked(BatchState.Abandoned, claimed, out cts);

    private void GiveUpLocked(BatchState to, List<Removal<TIn, TOut>> claimed, out CancellationTokenSource? cts)
    {
        Debug.Assert(State == BatchState.Running);
        SetState(to);
        for (int j = 0; j < _partCount; j++)
        {
            // Claimed here, completed by the processor outside its lock: no continuation, and no captured context's
            // Post, may ever run under the lock. The batch keeps its reference until it retires, and a caller that has
            // not been completed cannot consume, so each request stays valid until then either way. A multi-item
            // call's part needs no claim: the batch's state makes this the only path that records it.
            Request<TIn, TOut> request = _parts[j];
            if (request.IsMulti)
            {
                claimed.Add(new Removal<TIn, TOut>(request, _partStarts[j], PartLength(j), Unlinked: false));
            }
            else if (request.TryClaimFromBatch())
            {
                claimed.Add(new Removal<TIn, TOut>(request, 0, 1, Unlinked: false));
            }
        }

        cts = TakeCancellationLocked();
    }

    private CancellationTokenSource? TakeCancellationLocked()
    {
        if (_ctsHandedOut)
        {
            return null;
        }

        _ctsHandedOut = true;
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

    /// <summary>
    /// Poison isolation: rerun the failed batch in halves, recursively, so that only the inputs that make the handler
    /// fail fail their callers. The batch keeps its slot meanwhile. The verdict is recorded per slot and delivered by the
    /// normal completion once isolation is over, so completion, timeout and shutdown stay exclusive by the batch's
    /// state. Off the hot path: it allocates.
    /// </summary>
    private async Task IsolateThenFinishAsync(Exception firstError)
    {
        PrepareSlotErrors();
        try
        {
            await IsolateAsync(0, _count, _context.PoisonIsolationDepth, firstError).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            RecordFailure(0, _count, ex);
        }

        _ = Finish(succeeded: false, mayContinue: false);
    }

    private async Task IsolateAsync(int start, int end, int depth, Exception? failure)
    {
        if (failure is null)
        {
            if (_cts.IsCancellationRequested)
            {
                // Timed out, shut down or every caller cancelled: those paths release the callers.
                RecordFailure(start, end, new OperationCanceledException(_cts.Token));
                return;
            }

            Array.Clear(_outputs, start, end - start);
            try
            {
                await InvokeRangeAsync(start, end - start).ConfigureAwait(false);
                return; // the outputs of [start, end) stand
            }
            catch (Exception ex)
            {
                failure = ex;
            }
        }

        if (depth == 0 || end - start <= 1 || _cts.IsCancellationRequested)
        {
            RecordFailure(start, end, failure);
            return;
        }

        int middle = start + (end - start) / 2;
        await IsolateAsync(start, middle, depth - 1, null).ConfigureAwait(false);
        await IsolateAsync(middle, end, depth - 1, null).ConfigureAwait(false);
    }

    private void PrepareSlotErrors()
    {
        if (_slotErrors.Length < _count)
        {
            _slotErrors = new Exception?[_count];
            _slotErrorSizes = new int[_count];
        }

        Array.Clear(_slotErrors, 0, _count);
        _isolated = true;
    }

    private void RecordFailure(int start, int end, Exception failure)
    {
        for (int i = start; i < end; i++)
        {
            _slotErrors[i] = failure;
            _slotErrorSizes[i] = end - start;
        }
    }

    private ValueTask InvokeRangeAsync(int start, int length)
    {
        _rangeStart = start;
        _rangeLength = length;
        Exception? first = _handlerError;
        _handlerError = null;
        ExecutionContext.Run(_handlerContext, s_invokeRange, this);
        ValueTask pending = _pendingHandler;
        Exception? error = _handlerError;
        _pendingHandler = default;
        _handlerError = first;
        return error is null ? pending : ValueTask.FromException(error);
    }

    /// <summary>The handler failure that decides slot <paramref name="slot"/> (null: its output stands), and the size of the
    /// handler call it came from.</summary>
    private Exception? ErrorAt(int slot, out int callSize)
    {
        if (_isolated)
        {
            callSize = _slotErrorSizes[slot];
            return _slotErrors[slot];
        }

        callSize = _count;
        return _handlerError;
    }

    private int PartLength(int part) => (part + 1 < _partCount ? _partSlots[part + 1] : _count) - _partSlots[part];

    /// <summary>Hands a claimed single-item caller the outcome of slot <paramref name="slot"/>: the handler's failure, a
    /// missing output, or its output.</summary>
    private void Deliver(Request<TIn, TOut> request, int slot, bool inline)
    {
        if (ErrorAt(slot, out int callSize) is { } error)
        {
            request.SetException(_context.HandlerFailure(error, callSize), inline);
        }
        else if (_context.IsMissing(_outputs[slot]))
        {
            request.SetException(_context.MissingOutput(slot, _count), inline);
        }
        else
        {
            request.SetResult(_outputs[slot], inline);
        }
    }

    /// <summary>Records part <paramref name="part"/> of a multi-item call: writes its outputs into the caller's buffer
    /// (unless the caller was released already) and its failures, as runs; completes the call if it was the last.</summary>
    private void DeliverPart(int part, bool inline)
    {
        Request<TIn, TOut> request = _parts[part];
        int slot = _partSlots[part], length = PartLength(part), start = _partStarts[part];
        bool last;
        lock (request.PartSync)
        {
            if (request.IsFinishedLocked)
            {
                return; // cancelled: its buffer is no longer ours to write
            }

            Span<TOut> outputs = request.Outputs.Span.Slice(start, length);
            ReadOnlySpan<TOut> produced = _outputs.AsSpan(slot, length);
            if (!_isolated && _handlerError is null && (_context.OutputCheck == OutputCheck.None || !AnyMissing(produced)))
            {
                produced.CopyTo(outputs); // the common case: every output of the part stands
            }
            else
            {
                RecordPartLocked(request, outputs, slot, start, length);
            }

            last = request.EndItemsLocked(length);
        }

        if (last)
        {
            _context.Telemetry.RequestsFinished(request.CompleteCall(_context.Name, inline), 1);
        }
    }

    /// <summary>Under the request's part lock: writes the part's standing outputs and records its failures as runs
    /// (consecutive failures for one reason share one exception, so they form one run of ItemFailures).</summary>
    private void RecordPartLocked(Request<TIn, TOut> request, Span<TOut> outputs, int slot, int start, int length)
    {
        // Consecutive failures for one reason share one exception, so they form one run of ItemFailures.
        Exception? runCause = null, runError = null;
        bool runMissing = false;
        for (int k = 0; k < length; k++)
        {
            int s = slot + k;
            if (ErrorAt(s, out int callSize) is { } error)
            {
                if (runError is null || runMissing || !ReferenceEquals(runCause, error))
                {
                    (runCause, runMissing, runError) = (error, false, _context.HandlerFailure(error, callSize));
                }

                request.AddFailureLocked(start + k, 1, runError);
            }
            else if (_context.IsMissing(_outputs[s]))
            {
                if (runError is null || !runMissing)
                {
                    (runCause, runMissing, runError) = (null, true, _context.MissingOutput(s, _count));
                }

                request.AddFailureLocked(start + k, 1, runError);
            }
            else
            {
                outputs[k] = _outputs[s];
                runError = null;
            }
        }
    }

    private bool AnyMissing(ReadOnlySpan<TOut> outputs)
    {
        foreach (TOut output in outputs)
        {
            if (_context.IsMissing(output))
            {
                return true;
            }
        }

        return false;
    }

    private void ArmTimeoutLocked(long now)
    {
        long deadline = Timestamps.Add(now, _context.ExecutionTimeout, _context.Time.TimestampFrequency);
        if (deadline == Timestamps.Never)
        {
            return;
        }

        // Timer changes take a process-wide lock and were the largest fixed cost of a small batch, so the timer stays
        // armed across uses: one armed for an earlier, sooner deadline fires early, and ExecutionTimerFiredLocked
        // re-arms it for this use. At most one expiry per ExecutionTimeout per batch object.
        _timeoutTimer ??= DeadlineTimer.Create(_context.Time, () => _context.Owner.OnExecutionTimer(this), precise: false);
        _timeoutTimer.ArmNoLaterThan(deadline);
    }

    /// <summary>Buffers rented to the size of the batch: kept while they fit, swapped when much too small or too large.</summary>
    private void EnsureCapacity(int count)
    {
        Resize(ref _parts, count);
        Resize(ref _partSlots, count);
        Resize(ref _partStarts, count);
        Resize(ref _inputs, count);
        Resize(ref _outputs, count);

        static void Resize<T>(ref T[] array, int count)
        {
            if (array.Length >= count && array.Length <= Math.Max(64, count * 4))
            {
                return;
            }

            if (array.Length > 0)
            {
                ArrayPool<T>.Shared.Return(array, clearArray: RuntimeHelpers.IsReferenceOrContainsReferences<T>());
            }

            array = ArrayPool<T>.Shared.Rent(count);
        }
    }

    private void SetState(BatchState state) => Volatile.Write(ref _state, (int)state);

    /// <summary>Releases the timer and the buffers of an idle batch object (processor disposal).</summary>
    public void DisposeResources()
    {
        try
        {
            _timeoutTimer?.Dispose();
        }
        catch (Exception)
        {
            // A custom clock's timer; the guarded provider has reported it.
        }

        if (State == BatchState.Idle)
        {
            _parts = [];
            _inputs = [];
            _outputs = [];
        }
    }
}
