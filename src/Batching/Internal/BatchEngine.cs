using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Batching.Diagnostics;
using Batching.Internal.Admission;
using Batching.Internal.Dispatch;
using Batching.Internal.Execution;
using Batching.Internal.Timing;
using Batching.Policies;
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
    private readonly Func<TIn, int>? _itemWeight;
    private readonly int _maxBatchWeight;
    private readonly BatchCostModel _costModel = new(64); // for GetLoad's estimate, whatever the policy

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
        _itemWeight = options.ResolveItemWeight<TIn>();
        _maxBatchWeight = options.MaxBatchWeight;
        _queue = new AdmissionQueue<TIn, TOut>(options.QueueCapacity, options.QueueFullMode == QueueFullMode.Reject, options.ResolvePriorityWeights());
        _lock = _queue.Sync;
        Logger = new GuardedLogger(CreateLogger(loggerFactory));
        Telemetry = new ProcessorTelemetry(DisplayName, _policy.Name, meterFactory, Logger, _queue.Lanes, _queue.QueuedItemsIn, () => InFlightBatches,
            () => GetLoad().EstimatedWait.TotalSeconds);
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

    /// <summary>Items of callers waiting for queue space.</summary>
    public int WaitingForSpace
    {
        get
        {
            lock (_lock)
            {
                return _queue.WaitingItems;
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

    public ValueTask<TOut> ProcessAsync(TIn input, CancellationToken cancellationToken = default) =>
        Submit(input, 0, Timeout.InfiniteTimeSpan, cancellationToken);

    public ValueTask<TOut> ProcessAsync(TIn input, RequestOptions options, CancellationToken cancellationToken = default)
    {
        if (InvalidOptions(options) is { } invalid)
        {
            Telemetry.RequestsFinished(Outcomes.Rejected, 1);
            return ValueTask.FromException<TOut>(invalid);
        }

        return Submit(input, options.Priority, options.Timeout, cancellationToken);
    }

    private ValueTask<TOut> Submit(TIn input, int lane, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (EarlyRefusal(cancellationToken, timeout) is { } refusal)
        {
            return refusal is OperationCanceledException ? ValueTask.FromCanceled<TOut>(cancellationToken) : ValueTask.FromException<TOut>(refusal);
        }

        int weight = 0;
        if (_itemWeight is not null && Weigh(input, nameof(input), out weight) is { } badWeight)
        {
            Telemetry.RequestsFinished(Outcomes.Rejected, 1);
            return ValueTask.FromException<TOut>(badWeight);
        }

        long now = Arrival(timeout, out long deadline);
        ActivityContext callerActivity = CallerActivity();
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
                result = request.Prepare(input, now, cancellationToken, lane, deadline, weight);
                request.CallerActivity = callerActivity;
                admission = _queue.AdmitLocked(request);
                if (admission == AdmissionResult.Queued)
                {
                    inline = TryStartInlineLocked(now, out wake);
                    wake |= inline is null && _wakeUp.ArrivalWakesLocked(_queue.QueuedItems);
                }

                if (deadline != Timestamps.Never && admission != AdmissionResult.Rejected)
                {
                    _wakeUp.WakeNoLaterThan(deadline); // to expire it even while every slot is busy
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

    public ValueTask ProcessManyAsync(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, RequestOptions options = default, CancellationToken cancellationToken = default)
    {
        Exception? invalid = inputs.Length != outputs.Length
            ? new ArgumentException($"outputs has {outputs.Length} element(s) and inputs {inputs.Length}; they must be equally long (outputs[i] receives the output for inputs[i]). Nothing was queued.", nameof(outputs))
            : InvalidOptions(options);
        if (invalid is not null)
        {
            Telemetry.RequestsFinished(Outcomes.Rejected, 1);
            return ValueTask.FromException(invalid);
        }

        if (inputs.IsEmpty)
        {
            return cancellationToken.IsCancellationRequested ? ValueTask.FromCanceled(cancellationToken) : ValueTask.CompletedTask;
        }

        if (EarlyRefusal(cancellationToken, options.Timeout) is { } refusal)
        {
            return refusal is OperationCanceledException ? ValueTask.FromCanceled(cancellationToken) : ValueTask.FromException(refusal);
        }

        int[]? weights = null;
        if (_itemWeight is not null && WeighAll(inputs.Span, out weights) is { } badWeight)
        {
            Telemetry.RequestsFinished(Outcomes.Rejected, 1);
            return ValueTask.FromException(badWeight);
        }

        long now = Arrival(options.Timeout, out long deadline);
        ActivityContext callerActivity = CallerActivity();
        Request<TIn, TOut>? request = null;
        ValueTask result = default;
        AdmissionResult admission = AdmissionResult.Rejected;
        ProcessorState state;
        bool wake = false;
        lock (_lock)
        {
            state = _state;
            if (state == ProcessorState.Running)
            {
                request = _requestPool.RentLocked() ?? new Request<TIn, TOut>(this);
                result = request.PrepareMany(inputs, outputs, weights, now, cancellationToken, options.Priority, deadline);
                request.CallerActivity = callerActivity;
                admission = _queue.AdmitLocked(request);
                wake = admission == AdmissionResult.Queued && _wakeUp.ArrivalWakesLocked(_queue.QueuedItems);
                if (deadline != Timestamps.Never && admission != AdmissionResult.Rejected)
                {
                    _wakeUp.WakeNoLaterThan(deadline);
                }
            }

            AssertInvariants();
        }

        if (state != ProcessorState.Running || admission == AdmissionResult.Rejected)
        {
            if (request is not null)
            {
                request.ReleaseUnissued(); // returns the weights
            }
            else if (weights is not null)
            {
                ArrayPool<int>.Shared.Return(weights);
            }

            Telemetry.RequestsFinished(Outcomes.Rejected, 1);
            return ValueTask.FromException(state != ProcessorState.Running ? Refusal(state) : new BatchQueueFullException(
                $"The batching queue{(string.IsNullOrEmpty(Options.Name) ? "" : $" '{Options.Name}'")} has no room for the {inputs.Length} items of this call " +
                $"({_queue.Capacity} items, QueueCapacity) and QueueFullMode is Reject; none of them was queued."));
        }

        if (wake)
        {
            _wakeUp.Signal();
        }

        request!.RegisterCancellation();
        return result;
    }

    /// <summary>When a call arrives, and when its queue timeout expires (<see cref="Timestamps.Never"/> without one). A
    /// caller resumed inline by one of this processor's batches calls again at once: it shares the resume loop's reading,
    /// which may be a little old. Not with a queue timeout: an old arrival would expire it early.</summary>
    private long Arrival(TimeSpan timeout, out long deadline)
    {
        if (timeout == Timeout.InfiniteTimeSpan)
        {
            deadline = Timestamps.Never;
            return ResumeClock.TryGet(this, out long cached) ? cached : _time.GetTimestamp();
        }

        long now = _time.GetTimestamp();
        deadline = Timestamps.Add(now, timeout, _time.TimestampFrequency);
        return now;
    }

    /// <summary>The caller's activity, only while someone traces, for the batch's activity to link to.</summary>
    private static ActivityContext CallerActivity() =>
        ProcessorTelemetry.Source.HasListeners() && Activity.Current is { } caller ? caller.Context : default;

    /// <summary>What fails a call before it is weighed or queued: a cancelled token, a call from inside this processor's
    /// handler, a zero queue timeout. Counts it.</summary>
    private Exception? EarlyRefusal(CancellationToken cancellationToken, TimeSpan timeout)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            Telemetry.RequestsFinished(Outcomes.Cancelled, 1);
            return new OperationCanceledException(cancellationToken);
        }

        if (HandlerScope.Refuses(this))
        {
            Telemetry.RequestsFinished(Outcomes.Rejected, 1);
            return new InvalidOperationException(
                $"ProcessAsync of '{DisplayName}' was called from inside that processor's own batch handler (or from work the handler started while its batch runs). " +
                "Such a call would wait for a batch slot that the calling handler holds, so it is refused. Compute the item directly, or use another processor.");
        }

        if (timeout == TimeSpan.Zero)
        {
            Telemetry.RequestsFinished(Outcomes.Expired, 1);
            return new TimeoutException($"RequestOptions.Timeout is zero: the call to '{DisplayName}' expired before it could be queued.");
        }

        return null;
    }

    private ArgumentException? InvalidOptions(in RequestOptions options)
    {
        if ((uint)options.Priority >= (uint)_queue.Lanes)
        {
            return new ArgumentOutOfRangeException(nameof(options), options.Priority,
                $"RequestOptions.Priority must be between 0 and {_queue.Lanes - 1} (BatchingOptions.PriorityLevels of '{DisplayName}' is {_queue.Lanes}); it was {options.Priority}. Nothing was queued.");
        }

        if (options.Timeout < TimeSpan.Zero && options.Timeout != Timeout.InfiniteTimeSpan)
        {
            return new ArgumentOutOfRangeException(nameof(options), options.Timeout,
                $"RequestOptions.Timeout must be zero or more, or Timeout.InfiniteTimeSpan; it was {options.Timeout}. Nothing was queued.");
        }

        return null;
    }

    /// <summary>Calls ItemWeight (user code, on the caller's thread, outside every lock) and checks its answer.</summary>
    private ArgumentException? Weigh(TIn input, string argument, out int weight)
    {
        try
        {
            weight = _itemWeight!(input);
        }
        catch (Exception ex)
        {
            weight = 0;
            return new ArgumentException($"BatchingOptions.ItemWeight threw {ex.GetType().Name} for {argument}: {ex.Message}. Nothing was queued.", argument, ex);
        }

        if (weight < 0)
        {
            return new ArgumentException($"BatchingOptions.ItemWeight returned {weight} for {argument}; a weight must be 0 or more. Nothing was queued.", argument);
        }

        if (weight > _maxBatchWeight)
        {
            return new ArgumentException($"{argument} weighs {weight}, more than BatchingOptions.MaxBatchWeight ({_maxBatchWeight}) of '{DisplayName}': it can never fit in a batch. Nothing was queued.", argument);
        }

        return null;
    }

    private ArgumentException? WeighAll(ReadOnlySpan<TIn> inputs, out int[]? weights)
    {
        int[] rented = ArrayPool<int>.Shared.Rent(inputs.Length);
        for (int i = 0; i < inputs.Length; i++)
        {
            if (Weigh(inputs[i], $"inputs[{i}]", out rented[i]) is { } bad)
            {
                ArrayPool<int>.Shared.Return(rented);
                weights = null;
                return bad;
            }
        }

        weights = rented;
        return null;
    }

    private ObjectDisposedException Refusal(ProcessorState state) => state == ProcessorState.Faulted
        ? new ObjectDisposedException(DisplayName, $"The batch processor stopped after its dispatcher failed ({_faultReason}); it accepts no new items.")
        : new ObjectDisposedException(DisplayName, "The batch processor has been disposed; it accepts no new items.");

    void IRequestOwner<TIn, TOut>.OnCanceled(Request<TIn, TOut> request)
    {
        Removal<TIn, TOut>? removal;
        bool claimed = false, wake = false;
        CancellationTokenSource? cts = null;
        lock (_lock)
        {
            removal = _queue.TryRemoveLocked(request);
            if (removal is not null)
            {
                // Callers waiting for space may have taken its place.
                wake = _queue.QueuedItems > 0 && _wakeUp.ArrivalWakesLocked(_queue.QueuedItems);
            }
            else if (!request.IsMulti && request.TryClaimFromBatch())
            {
                // Its batch is running: release the caller now and let the batch drop the output. The batch still holds
                // its reference, so Batch and BatchGeneration stay valid here.
                claimed = true;
                cts = request.Batch!.OnItemCanceledLocked(request.BatchGeneration);
            }

            AssertInvariants();
        }

        bool release;
        if (request.IsMulti)
        {
            // Its parts in running batches finish without it: they find the call finished and leave its buffer alone.
            lock (request.PartSync)
            {
                release = request.TryFinishNowLocked();
            }
        }
        else
        {
            release = removal is not null || claimed;
        }

        if (release)
        {
            Telemetry.RequestsFinished(Outcomes.Cancelled, 1);
            request.SetException(new OperationCanceledException(request.CancellationToken), inline: false);
        }

        if (removal is { Unlinked: true })
        {
            request.ReleaseEngineReference();
        }

        Batch<TIn, TOut>.Cancel(cts);
        if (wake)
        {
            _wakeUp.Signal();
        }
    }

    /// <summary>Fails items that will not run (expired, timed out, shut down), outside the lock: a single-item caller at
    /// once, a multi-item call's items into its outcome (completing the call if they were its last). Releases the queue's
    /// reference when the request left its lane.</summary>
    private void FailItems(Removal<TIn, TOut> removal, Exception error, string outcome)
    {
        Request<TIn, TOut> request = removal.Request;
        if (!request.IsMulti)
        {
            Telemetry.RequestsFinished(outcome, 1);
            request.SetException(error, inline: false);
        }
        else
        {
            bool last = false;
            lock (request.PartSync)
            {
                if (!request.IsFinishedLocked)
                {
                    request.AddFailureLocked(removal.Start, removal.Count, error);
                    last = request.EndItemsLocked(removal.Count);
                }
            }

            if (last)
            {
                Telemetry.RequestsFinished(request.CompleteCall(DisplayName, inline: false), 1);
            }
        }

        if (removal.Unlinked)
        {
            request.ReleaseEngineReference();
        }
    }

    private TimeoutException Expired(Request<TIn, TOut> request) =>
        new($"The item(s) waited {_time.GetElapsedTime(request.ArrivalTimestamp, request.Deadline)} in the queue of '{DisplayName}' (RequestOptions.Timeout) " +
            "without being dispatched; they were removed and never reached the handler.");

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

            if (succeeded)
            {
                _costModel.Add(batch.Count, duration);
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
            List<Removal<TIn, TOut>>? claimed = null;
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

            foreach (Removal<TIn, TOut> part in claimed!)
            {
                FailItems(part, _context.TimeoutFailure(count), Outcomes.Failed);
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
    /// disposed or after the dispatcher failed. The data carry the load (as <see cref="GetLoad"/>).</summary>
    public HealthCheckResult CheckHealth()
    {
        ProcessorState state = State;
        ProcessorLoad load = GetLoad();
        int queued = load.QueuedItems, waiting = load.WaitingItems;
        var byLevel = new int[load.PriorityLevels];
        for (int level = 0; level < byLevel.Length; level++)
        {
            byLevel[level] = load.GetQueuedItems(level);
        }

        var data = new Dictionary<string, object>
        {
            ["state"] = state.ToString(),
            ["queued"] = queued,
            ["queued_by_priority"] = byLevel,
            ["waiting_for_space"] = waiting,
            ["in_flight_batches"] = load.BatchesInFlight,
            ["slots"] = load.Slots,
            ["queue_capacity"] = load.QueueCapacity,
            ["estimated_wait_ms"] = load.EstimatedWait.TotalMilliseconds,
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

        return HealthCheckResult.Healthy($"'{DisplayName}': {queued} queued, {load.BatchesInFlight} batch(es) running.", data);
    }

    public ProcessorLoad GetLoad()
    {
        int lanes = _queue.Lanes;
        Span<int> ahead = stackalloc int[ProcessorLoad.MaxPriorityLevels];
        Span<int> queued = stackalloc int[ProcessorLoad.MaxPriorityLevels];
        Span<TimeSpan> waits = stackalloc TimeSpan[ProcessorLoad.MaxPriorityLevels];
        int waiting, inFlight, occupied;
        double residual = double.MaxValue, fixedSeconds, perItemSeconds;
        bool modelled, accepting;
        lock (_lock)
        {
            for (int lane = 0; lane < lanes; lane++)
            {
                queued[lane] = _queue.QueuedItemsIn(lane);
                ahead[lane] = queued[lane] + _queue.WaitingItemsIn(lane);
            }

            waiting = _queue.WaitingItems;
            inFlight = _running.Count;
            occupied = _running.Count; // a batch resuming its callers frees its slot within microseconds
            accepting = _state == ProcessorState.Running;
            modelled = _costModel.Count > 0;
            fixedSeconds = _costModel.FixedSeconds;
            perItemSeconds = _costModel.PerItemSeconds;
            if (modelled)
            {
                long now = _time.GetTimestamp();
                foreach (Batch<TIn, TOut> batch in _running)
                {
                    double left = fixedSeconds + perItemSeconds * batch.Count - _time.GetElapsedTime(batch.StartTimestamp, now).TotalSeconds;
                    residual = Math.Min(residual, Math.Max(0, left));
                }
            }
        }

        for (int lane = 0; lane < lanes; lane++)
        {
            waits[lane] = modelled ? EstimateWait(ahead, lanes, lane, occupied, residual, fixedSeconds + perItemSeconds * _maxBatchSize) : TimeSpan.Zero;
        }

        return new ProcessorLoad(lanes, queued, waits, waiting, inFlight, _maxConcurrentBatches, _queue.Capacity, accepting);
    }

    /// <summary>
    /// The wait of a new item of <paramref name="lane"/> until its batch starts. Ahead of it: its lane's items, and of
    /// every other lane what the fair share dispatches meanwhile (up to that lane's backlog). Those items fill
    /// <c>k = ahead / MaxBatchSize</c> batches before its own; with <c>F</c> slots free, the first F of them start at
    /// once, and each later one waits for a slot: the soonest running batch to finish (its predicted cost less its
    /// age), then one full batch's predicted cost per slot for each batch more.
    /// </summary>
    private TimeSpan EstimateWait(ReadOnlySpan<int> ahead, int lanes, int lane, int occupied, double residual, double fullBatchSeconds)
    {
        long own = ahead[lane], items = own;
        int weight = _queue.WeightOf(lane);
        for (int other = 0; other < lanes; other++)
        {
            if (other != lane)
            {
                items += Math.Min(ahead[other], (own + 1) * _queue.WeightOf(other) / weight + _queue.WeightOf(other));
            }
        }

        long batchesAhead = items / _maxBatchSize;
        int free = Math.Max(0, _maxConcurrentBatches - occupied);
        if (batchesAhead < free)
        {
            return TimeSpan.Zero;
        }

        double first = residual == double.MaxValue ? fullBatchSeconds : residual;
        double seconds = first + (batchesAhead - free) * fullBatchSeconds / _maxConcurrentBatches;
        return TimeSpan.FromSeconds(Math.Min(seconds, TimeSpan.MaxValue.TotalSeconds / 2));
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
        Debug.Assert(_state == ProcessorState.Running || _queue.WaitingItems == 0, "callers wait for space after intake closed");
        Debug.Assert(Volatile.Read(ref _openResumeBursts) >= 0);
    }
}
