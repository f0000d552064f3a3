using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Batching.Diagnostics;
using Batching.Internal.Admission;
using Batching.Internal.Dispatch;
using Batching.Internal.Execution;
using Batching.Internal.Timing;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Batching.Internal;

/// <summary>A processor's life. One field, changed only under the processor's lock.</summary>
internal enum ProcessorState
{
    /// <summary>Accepting and serving.</summary>
    Running,

    /// <summary>DisposeAsync began: intake is closed, queued items are dispatched without waiting for the policy.</summary>
    Draining,

    /// <summary>Drained, or ShutdownTimeout gave up on what was left: nothing is queued or running any more.</summary>
    Stopped,

    /// <summary>The dispatcher failed (a bug, or a host whose clock throws): everything was failed, nothing is accepted.</summary>
    Faulted,
}

/// <summary>
/// The processor: composes the admission queue, the dispatcher's wake-up and the batches, and alone owns the slots.
/// </summary>
/// <remarks>
/// <para>Parts, by concern: <see cref="AdmissionQueue{TIn, TOut}"/> (queue, wait-for-space list, counts, cancel-unlink;
/// it owns the one lock), <see cref="DispatchWakeUp"/> (signal, wake conditions, deadline timer), the dispatch step in
/// <c>BatchEngine.Dispatch.cs</c> (asks the policy, starts batches), <see cref="Batch{TIn, TOut}"/> (the handler call
/// and the completion of its callers, an explicit state machine), and shutdown in <c>BatchEngine.Shutdown.cs</c>.</para>
/// <para>The lock is held only for list and counter updates and for the policy's calls: never while a handler, a
/// continuation, a logger or a listener runs. Every lock body ends with <see cref="AssertInvariants"/> in DEBUG builds.
/// The running set <see cref="_running"/> is the slots: a batch holds a slot exactly while it is in it, and it leaves it
/// in the same lock body as it leaves the Running state.</para>
/// <para>No user code runs on the dispatcher except the policy: handlers run on their own pool work items (or, with
/// <see cref="BatchingOptions.InlineWhenIdle"/>, on the caller's thread), and callers are resumed by the batch that
/// carried them.</para>
/// </remarks>
internal sealed partial class BatchEngine<TIn, TOut> : IBatchProcessor<TIn, TOut>, IDisposable, IBatchingHealthContributor, IRequestOwner<TIn, TOut>, IBatchOwner<TIn, TOut>
{
    private readonly AdmissionQueue<TIn, TOut> _queue;
    private readonly Lock _lock;
    private readonly DispatchWakeUp _wakeUp;
    private readonly BatchContext<TIn, TOut> _context;
    private readonly List<Batch<TIn, TOut>> _running = [];
    private readonly ConcurrentQueue<Batch<TIn, TOut>> _idleBatches = new();
    private readonly RequestPool<TIn, TOut> _requestPool = new();
    private readonly FlushPolicy _policy;
    private readonly TimeProvider _time;
    private readonly long _startTimestamp;
    private readonly int _maxBatchSize;
    private readonly TimeSpan _maxDelay;
    private readonly int _maxConcurrentBatches;
    private readonly bool _inlineWhenIdle;
    private readonly TimeSpan _shutdownTimeout;

    private ProcessorState _state;
    private string? _faultReason;
    private int _openResumeBursts;
    private int _batchesInTransit; // started and not retired, less those waiting for their handler's task

    public BatchEngine(BatchHandler<TIn, TOut> handler, BatchingOptions options, TimeProvider timeProvider, ILoggerFactory? loggerFactory = null, IMeterFactory? meterFactory = null)
    {
        Options = options;
        _time = timeProvider == TimeProvider.System ? timeProvider : new GuardedTimeProvider(timeProvider, DispatcherFailed);
        DisplayName = string.IsNullOrEmpty(options.Name) ? $"BatchProcessor<{typeof(TIn).Name}, {typeof(TOut).Name}>" : options.Name;
        _policy = options.FlushPolicy.CreateInstance() ?? throw new ArgumentException(
            $"BatchingOptions.FlushPolicy's CreateInstance() returned null; it must return a policy.", nameof(options));
        _maxBatchSize = options.MaxBatchSize;
        _maxDelay = options.MaxDelay;
        _maxConcurrentBatches = options.MaxConcurrentBatches;
        _inlineWhenIdle = options.InlineWhenIdle;
        _shutdownTimeout = options.ShutdownTimeout;
        _queue = new AdmissionQueue<TIn, TOut>(options.QueueCapacity, options.QueueFullMode == QueueFullMode.Reject);
        _lock = _queue.Sync;
        Logger = new GuardedLogger(CreateLogger(loggerFactory));
        Telemetry = new ProcessorTelemetry(DisplayName, _policy.Name, meterFactory, Logger, () => _queue.QueuedItems, () => InFlightBatches);
        _context = new BatchContext<TIn, TOut>(this, handler, _time, Telemetry, Logger, DisplayName,
            options.ExecutionTimeout, options.PoisonIsolationDepth, options.OutputCheck);
        _wakeUp = new DispatchWakeUp(_time, RunDispatcher);
        _startTimestamp = _time.GetTimestamp();
        Log.Started(Logger, DisplayName, _policy.Name, _maxBatchSize, _maxDelay, options.QueueCapacity, options.QueueFullMode, _maxConcurrentBatches, options.ExecutionTimeout);
    }

    public ILogger Logger { get; }

    /// <summary>A logging provider that throws while creating its logger costs the processor its logs, not its life.</summary>
    private static ILogger CreateLogger(ILoggerFactory? loggerFactory)
    {
        try
        {
            return (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Batching.BatchProcessor");
        }
        catch (Exception)
        {
            return NullLogger.Instance;
        }
    }

    public ProcessorTelemetry Telemetry { get; }

    public BatchingOptions Options { get; }

    /// <summary>The processor's clock, as configured.</summary>
    public TimeProvider Time => _time is GuardedTimeProvider guarded ? guarded.Inner : _time;

    public string DisplayName { get; }

    string IBatchingHealthContributor.Name => DisplayName;

    /// <summary>Items waiting in the queue (not those waiting for space, nor those in running batches).</summary>
    public int QueuedItems => _queue.QueuedItems;

    /// <summary>Callers waiting for queue space.</summary>
    public int WaitingForSpace
    {
        get
        {
            lock (_lock)
            {
                return _queue.WaitingForSpace;
            }
        }
    }

    /// <summary>Batches whose handler call is running and holds a slot.</summary>
    public int InFlightBatches
    {
        get
        {
            lock (_lock)
            {
                return _running.Count;
            }
        }
    }

    /// <summary>Whether the dispatcher is neither running nor scheduled and every batch it started is either retired or
    /// waiting for its handler's task: tests use it to observe "nothing happens" (on fake time, that nothing more happens
    /// until the clock moves or a handler's task completes).</summary>
    internal bool IsDispatcherSleeping => _wakeUp.IsIdle && Volatile.Read(ref _batchesInTransit) == 0;

    internal ProcessorState State
    {
        get
        {
            lock (_lock)
            {
                return _state;
            }
        }
    }

    public ValueTask<TOut> ProcessAsync(TIn input, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            Telemetry.RequestsFinished(Outcomes.Cancelled, 1);
            return ValueTask.FromCanceled<TOut>(cancellationToken);
        }

        if (HandlerScope.Refuses(this))
        {
            Telemetry.RequestsFinished(Outcomes.Rejected, 1);
            return ValueTask.FromException<TOut>(new InvalidOperationException(
                $"ProcessAsync of '{DisplayName}' was called from inside that processor's own batch handler (or from work the handler started while its batch runs). " +
                "Such a call would wait for a batch slot that the calling handler holds, so it is refused. Compute the item directly, or use another processor."));
        }

        // A caller resumed inline by one of this processor's batches calls again at once: it shares the resume loop's reading.
        long now = ResumeClock.TryGet(this, out long cached) ? cached : _time.GetTimestamp();
        ActivityContext callerActivity = ProcessorTelemetry.Source.HasListeners() && Activity.Current is { } caller ? caller.Context : default;
        Request<TIn, TOut>? request = null;
        ValueTask<TOut> result = default;
        AdmissionResult admission = AdmissionResult.Rejected;
        ProcessorState state;
        Batch<TIn, TOut>? inline = null;
        bool wake = false;
        lock (_lock)
        {
            state = _state;
            if (state == ProcessorState.Running)
            {
                request = _requestPool.RentLocked() ?? new Request<TIn, TOut>(this);
                result = request.Prepare(input, now, cancellationToken);
                request.CallerActivity = callerActivity;
                admission = _queue.AdmitLocked(request);
                if (admission == AdmissionResult.Queued)
                {
                    inline = TryStartInlineLocked(now, out wake);
                    wake |= inline is null && _wakeUp.ArrivalWakesLocked(_queue.QueuedItems);
                }
            }

            AssertInvariants();
        }

        if (state != ProcessorState.Running || admission == AdmissionResult.Rejected)
        {
            request?.ReleaseUnissued();
            Telemetry.RequestsFinished(Outcomes.Rejected, 1);
            return ValueTask.FromException<TOut>(state != ProcessorState.Running
                ? Refusal(state)
                : new BatchQueueFullException(Options.Name, _queue.Capacity));
        }

        if (wake)
        {
            _wakeUp.Signal();
        }

        if (inline is not null)
        {
            inline.RunInline();
            if (result.IsCompleted)
            {
                return result;
            }
        }

        request!.RegisterCancellation();
        return result;
    }

    private ObjectDisposedException Refusal(ProcessorState state) => state == ProcessorState.Faulted
        ? new ObjectDisposedException(DisplayName, $"The batch processor stopped after its dispatcher failed ({_faultReason}); it accepts no new items.")
        : new ObjectDisposedException(DisplayName, "The batch processor has been disposed; it accepts no new items.");

    void IRequestOwner<TIn, TOut>.OnCanceled(Request<TIn, TOut> request)
    {
        bool removed, claimed = false, wake = false;
        CancellationTokenSource? cts = null;
        lock (_lock)
        {
            removed = _queue.TryRemoveLocked(request);
            if (removed)
            {
                // Callers waiting for space may have taken its place.
                wake = _queue.QueuedItems > 0 && _wakeUp.ArrivalWakesLocked(_queue.QueuedItems);
            }
            else if (request.TryClaimFromBatch())
            {
                // Its batch is running: release the caller now and let the batch drop the output. The batch still holds
                // its reference, so Batch and BatchGeneration stay valid here.
                claimed = true;
                cts = request.Batch!.OnItemCanceledLocked(request.BatchGeneration);
            }

            AssertInvariants();
        }

        if (removed || claimed)
        {
            Telemetry.RequestsFinished(Outcomes.Cancelled, 1);
            request.SetException(new OperationCanceledException(request.CancellationToken), inline: false);
        }

        if (removed)
        {
            request.ReleaseEngineReference();
        }

        Batch<TIn, TOut>.Cancel(cts);
        if (wake)
        {
            _wakeUp.Signal();
        }
    }

    void IRequestOwner<TIn, TOut>.Return(Request<TIn, TOut> request) => _requestPool.Return(request);

    BatchState IBatchOwner<TIn, TOut>.OnHandlerReturned(Batch<TIn, TOut> batch, TimeSpan duration, bool succeeded)
    {
        BatchState state;
        lock (_lock)
        {
            if (batch.State == BatchState.Running)
            {
                bool removed = _running.Remove(batch);
                Debug.Assert(removed);
                // Its slot stays taken for dispatch until the burst of resumptions closes, which wakes the dispatcher
                // (or runs it on this thread); signalling it now would only cost it a useless run.
                batch.CompleteLocked();
                Interlocked.Increment(ref _openResumeBursts);
            }

            try
            {
                _policy.OnBatchCompleted(new BatchCompletion(batch.Count, duration, succeeded));
            }
            catch (Exception ex)
            {
                // A custom policy's bookkeeping error must not break batch completion.
                Log.PolicyFailed(Logger, DisplayName, _policy.Name, ex);
            }

            state = batch.State;
            AssertInvariants();
        }

        return state;
    }

    void IBatchOwner<TIn, TOut>.OnHandlerPending(bool pending) => Interlocked.Add(ref _batchesInTransit, pending ? -1 : 1);

    void IBatchOwner<TIn, TOut>.OnExecutionTimer(Batch<TIn, TOut> batch)
    {
        try
        {
            bool timedOut, wake = false;
            int count = 0;
            List<Request<TIn, TOut>>? claimed = null;
            CancellationTokenSource? cts = null;
            lock (_lock)
            {
                timedOut = batch.ExecutionTimerFiredLocked(_time.GetTimestamp());
                if (timedOut)
                {
                    bool removed = _running.Remove(batch);
                    Debug.Assert(removed);
                    claimed = [];
                    count = batch.Count;
                    batch.TimeOutLocked(claimed, out cts);
                    wake = SlotFreedLocked();
                }

                AssertInvariants();
            }

            if (!timedOut)
            {
                return;
            }

            Telemetry.RequestsFinished(Outcomes.Failed, claimed!.Count);
            foreach (Request<TIn, TOut> request in claimed)
            {
                request.SetException(_context.TimeoutFailure(count), inline: false);
            }

            Log.BatchTimedOut(Logger, DisplayName, count, Options.ExecutionTimeout);
            Batch<TIn, TOut>.Cancel(cts);
            if (wake)
            {
                _wakeUp.Signal();
            }
        }
        catch (Exception ex)
        {
            // On a timer thread an exception would end the process; fail this processor instead.
            DispatcherFailed(ex);
        }
    }

    void IBatchOwner<TIn, TOut>.OnResumeBurstClosed(bool signalDispatcher)
    {
        Interlocked.Decrement(ref _openResumeBursts);
        if (signalDispatcher)
        {
            _wakeUp.Signal();
        }
    }

    Batch<TIn, TOut>? IBatchOwner<TIn, TOut>.TakeNextBatchHere()
    {
        if (!_wakeUp.TryBeginRun())
        {
            _wakeUp.Signal(); // running or scheduled elsewhere: make sure it looks again
            return null;
        }

        return DispatchUntilIdle();
    }

    void IBatchOwner<TIn, TOut>.OnRetired(Batch<TIn, TOut> batch)
    {
        Interlocked.Decrement(ref _batchesInTransit);

        // A racy read is enough: a batch pooled just as the processor stops is disposed by the shutdown's last sweep, or
        // simply collected with it.
        if (Volatile.Read(ref Unsafe.As<ProcessorState, int>(ref _state)) is (int)ProcessorState.Running or (int)ProcessorState.Draining)
        {
            _idleBatches.Enqueue(batch);
        }
        else
        {
            batch.DisposeResources(); // guarded: never throws
        }
    }

    /// <summary>A slot was freed: whether the dispatcher must run. With an empty queue it stays asleep until the next
    /// arrival, which then finds the slot free (and may take the idle fast path).</summary>
    private bool SlotFreedLocked()
    {
        if (_queue.QueuedItems > 0 || _state != ProcessorState.Running)
        {
            return true;
        }

        _wakeUp.WakeOnArrivalLocked();
        return false;
    }

    /// <summary>Healthy while serving; Degraded when the queue is 90% full or callers wait for space; Unhealthy once
    /// disposed or after the dispatcher failed.</summary>
    public HealthCheckResult CheckHealth()
    {
        int queued, waiting, inFlight;
        ProcessorState state;
        lock (_lock)
        {
            queued = _queue.QueuedItems;
            waiting = _queue.WaitingForSpace;
            inFlight = _running.Count;
            state = _state;
        }

        var data = new Dictionary<string, object>
        {
            ["state"] = state.ToString(),
            ["queued"] = queued,
            ["waiting_for_space"] = waiting,
            ["in_flight_batches"] = inFlight,
            ["queue_capacity"] = _queue.Capacity,
        };
        switch (state)
        {
            case ProcessorState.Faulted:
                return HealthCheckResult.Unhealthy($"'{DisplayName}' stopped: its dispatcher failed ({_faultReason}).", data: data);
            case ProcessorState.Draining or ProcessorState.Stopped:
                return HealthCheckResult.Unhealthy($"'{DisplayName}' is disposed and accepts no requests.", data: data);
        }

        if (waiting > 0 || queued >= _queue.Capacity * 0.9)
        {
            return HealthCheckResult.Degraded($"'{DisplayName}' queue is near capacity ({queued}/{_queue.Capacity} queued, {waiting} waiting for space).", data: data);
        }

        return HealthCheckResult.Healthy($"'{DisplayName}': {queued} queued, {inFlight} batch(es) running.", data);
    }

    [Conditional("DEBUG")]
    private void AssertInvariants()
    {
        _queue.AssertInvariants();
        Debug.Assert(_running.Count <= _maxConcurrentBatches, $"{_running.Count} batches hold slots (MaxConcurrentBatches {_maxConcurrentBatches})");
        foreach (Batch<TIn, TOut> batch in _running)
        {
            Debug.Assert(batch.State == BatchState.Running, $"a batch in the running set is {batch.State}");
        }

        Debug.Assert(_state != ProcessorState.Stopped || (_running.Count == 0 && _queue.QueuedItems == 0), "stopped with work left");
        Debug.Assert(_state == ProcessorState.Running || _queue.WaitingForSpace == 0, "callers wait for space after intake closed");
        Debug.Assert(Volatile.Read(ref _openResumeBursts) >= 0);
    }
}
