using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Batching.Diagnostics;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Batching.Internal;

/// <summary>
/// The processor: a bounded FIFO of requests, one dispatcher loop that asks the flush policy when to form a
/// batch, and batches that run the handler and hand each caller its own output.
/// </summary>
/// <remarks>
/// <para>One lock (<see cref="_lock"/>) guards the queue, the waiting-for-space list, the counters and the
/// dispatcher's wake-up conditions. It is held only for list and counter updates: never while the handler runs,
/// never while a caller is completed (completions run caller continuations asynchronously anyway).</para>
/// <para>The dispatcher sleeps on an <see cref="AsyncSignal"/>. Before sleeping it records, under the lock, what
/// should wake it: a queue length (<see cref="_wakeWhenQueued"/>), a freed batch slot, or a timer for the
/// MaxDelay bound or the policy's wait. Producers signal only when that condition is met, so a busy queue costs
/// the dispatcher no wake-ups per item.</para>
/// </remarks>
internal sealed partial class BatchEngine<TIn, TOut> : IBatchProcessor<TIn, TOut>, IBatchingHealthContributor, IDeadlineTarget
{
    private readonly object _lock = new();
    private readonly AsyncSignal _signal = new();
    private readonly ConcurrentQueue<Request<TIn, TOut>> _requestPool = new();
    private readonly Stack<Batch<TIn, TOut>> _batchPool = new();
    private readonly List<Batch<TIn, TOut>> _running = [];
    private readonly FlushPolicy _policy;
    private readonly ITimer? _timer;
    private readonly long _startTimestamp;
    private readonly int _maxBatchSize;
    private readonly TimeSpan _maxDelay;
    private readonly int _queueCapacity;
    private readonly int _maxConcurrentBatches;
    private readonly bool _rejectWhenFull;
    private readonly OutputCheck _outputCheck;
    private readonly bool _preciseDeadlines;
    private readonly bool _inlineWhenIdle;
    private readonly Task _dispatcher;
    private readonly Func<int, Exception> _timeoutFailure;

    private RequestList<TIn, TOut> _queue;
    private RequestList<TIn, TOut> _waitingForSpace;
    private int _queuedItems;
    private int _inFlight;
    private long _totalArrivals;
    private bool _dispatcherWaiting;
    private int _lastBatchSize;
    private bool _yieldedSinceLastBatch;
    private int _wakeWhenQueued = 1;
    private long _timerDueTimestamp = long.MaxValue;
    private bool _disposed;
    private bool _aborted;
    private Task? _disposeTask;

    public BatchEngine(BatchHandler<TIn, TOut> handler, BatchingOptions options, TimeProvider timeProvider, ILoggerFactory? loggerFactory = null, IMeterFactory? meterFactory = null)
    {
        Handler = handler;
        Options = options;
        Time = timeProvider;
        DisplayName = string.IsNullOrEmpty(options.Name) ? $"BatchProcessor<{typeof(TIn).Name}, {typeof(TOut).Name}>" : options.Name;
        _policy = options.FlushPolicy.CreateInstance();
        _maxBatchSize = options.MaxBatchSize;
        _maxDelay = options.MaxDelay;
        _queueCapacity = options.QueueCapacity;
        _maxConcurrentBatches = options.MaxConcurrentBatches;
        _rejectWhenFull = options.QueueFullMode == QueueFullMode.Reject;
        _outputCheck = options.OutputCheck;
        _inlineWhenIdle = options.InlineWhenIdle;
        ExecutionTimeout = options.ExecutionTimeout;
        PoisonIsolationDepth = options.PoisonIsolationDepth;

        // The system clock's timers tick every 1 to 4 ms (15.6 ms on Windows): MaxDelay deadlines go to the shared
        // DeadlineScheduler instead. Any other clock (fake time in tests, a custom provider) keeps its own timers.
        _preciseDeadlines = timeProvider == TimeProvider.System;
        _timeoutFailure = TimeoutFailure;
        _timer = _preciseDeadlines ? null : timeProvider.CreateTimer(static s => ((BatchEngine<TIn, TOut>)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _startTimestamp = timeProvider.GetTimestamp();
        Logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Batching.BatchProcessor");
        Telemetry = new ProcessorTelemetry(DisplayName, _policy.Name, meterFactory, () => QueuedItems, () => InFlightBatches);
        Log.Started(Logger, DisplayName, _policy.Name, _maxBatchSize, _maxDelay, _queueCapacity, options.QueueFullMode, _maxConcurrentBatches, ExecutionTimeout);
        _dispatcher = Task.Run(RunDispatcherAsync);
    }

    public ILogger Logger { get; }

    public ProcessorTelemetry Telemetry { get; }

    string IBatchingHealthContributor.Name => DisplayName;

    /// <summary>Healthy while serving; Degraded when the queue is 90% full or callers wait for space; Unhealthy once disposed.</summary>
    public HealthCheckResult CheckHealth()
    {
        int queued, waiting, inFlight;
        bool disposed;
        lock (_lock)
        {
            queued = _queuedItems;
            waiting = _waitingForSpace.Count;
            inFlight = _inFlight;
            disposed = _disposed;
        }

        var data = new Dictionary<string, object>
        {
            ["queued"] = queued,
            ["waiting_for_space"] = waiting,
            ["in_flight_batches"] = inFlight,
            ["queue_capacity"] = _queueCapacity,
        };
        if (disposed)
        {
            return HealthCheckResult.Unhealthy($"'{DisplayName}' is disposed and accepts no requests.", data: data);
        }

        if (waiting > 0 || queued >= _queueCapacity * 0.9)
        {
            return HealthCheckResult.Degraded($"'{DisplayName}' queue is near capacity ({queued}/{_queueCapacity} queued, {waiting} waiting for space).", data: data);
        }

        return HealthCheckResult.Healthy($"'{DisplayName}': {queued} queued, {inFlight} batch(es) running.", data);
    }

    public BatchHandler<TIn, TOut> Handler { get; }

    public BatchingOptions Options { get; }

    public TimeProvider Time { get; }

    public string DisplayName { get; }

    public TimeSpan ExecutionTimeout { get; }

    public int PoisonIsolationDepth { get; }

    /// <summary>Items waiting in the queue (not those waiting for space, nor those in running batches).</summary>
    public int QueuedItems => Volatile.Read(ref _queuedItems);

    /// <summary>Whether the dispatcher is asleep waiting for a condition (tests use it to observe "nothing happens").</summary>
    internal bool IsDispatcherSleeping
    {
        get
        {
            lock (_lock)
            {
                return _dispatcherWaiting || _dispatcher.IsCompleted;
            }
        }
    }

    /// <summary>Callers waiting for queue space.</summary>
    public int WaitingForSpace
    {
        get
        {
            lock (_lock)
            {
                return _waitingForSpace.Count;
            }
        }
    }

    /// <summary>Batches whose handler call is running and holds a slot.</summary>
    public int InFlightBatches => Volatile.Read(ref _inFlight);

    public ValueTask<TOut> ProcessAsync(TIn input, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<TOut>(cancellationToken);
        }

        Request<TIn, TOut> request = RentRequest();
        request.Prepare(input);
        if (ProcessorTelemetry.Source.HasListeners() && Activity.Current is { } caller)
        {
            request.CallerActivity = caller.Context;
        }

        ValueTask<TOut> result = request.AsValueTask();
        long now = Time.GetTimestamp();
        bool wake = false;
        Exception? refusal = null;
        Batch<TIn, TOut>? inline = null;
        lock (_lock)
        {
            if (_disposed)
            {
                refusal = new ObjectDisposedException(DisplayName, "The batch processor has been disposed; it accepts no new items.");
            }
            else if (_queuedItems < _queueCapacity && _waitingForSpace.Count == 0)
            {
                EnqueueLocked(request, now);
                inline = TryTakeInlineBatchLocked();
                wake = inline is null && ShouldWakeLocked();
            }
            else if (_rejectWhenFull)
            {
                refusal = new BatchQueueFullException(Options.Name, _queueCapacity);
            }
            else
            {
                request.State = RequestState.WaitingForSpace;
                _waitingForSpace.AddLast(request);
            }
        }

        if (refusal is not null)
        {
            Telemetry.RequestsFinished(Outcomes.Rejected, 1);
            request.Release();
            request.Release();
            return ValueTask.FromException<TOut>(refusal);
        }

        if (wake)
        {
            _signal.Set();
        }

        if (inline is not null)
        {
            inline.Run();
            if (result.IsCompleted)
            {
                return result;
            }
        }

        request.RegisterCancellation(cancellationToken);
        return result;
    }

    void IDeadlineTarget.OnDeadline() => OnTimer();

    private void OnTimer()
    {
        lock (_lock)
        {
            _timerDueTimestamp = long.MaxValue;
            _dispatcherWaiting = false;
        }

        _signal.Set();
    }

    private Request<TIn, TOut> RentRequest() =>
        _requestPool.TryDequeue(out Request<TIn, TOut>? request) ? request : new Request<TIn, TOut>(this);

    // Unbounded on purpose: it never holds more requests than callers once had outstanding at the same time (like
    // ArrayPool, it keeps the peak), and counting a ConcurrentQueue would cost every request a snapshot.
    internal void ReturnToPool(Request<TIn, TOut> request) => _requestPool.Enqueue(request);

    private void EnqueueLocked(Request<TIn, TOut> request, long timestamp)
    {
        Debug.Assert(Monitor.IsEntered(_lock));
        request.EnqueuedTimestamp = timestamp;
        request.State = RequestState.Queued;
        _queue.AddLast(request);
        _queuedItems++;
        _totalArrivals++;
    }

    /// <summary>Whether the queue now meets the condition the sleeping dispatcher asked to be woken for; if so, it is no longer asleep.</summary>
    private bool ShouldWakeLocked()
    {
        if (_dispatcherWaiting && _queuedItems >= _wakeWhenQueued)
        {
            _dispatcherWaiting = false;
            return true;
        }

        return false;
    }

    /// <summary>Moves callers waiting for space into the queue, oldest first, as far as capacity allows.</summary>
    private bool AdmitWaitingLocked()
    {
        Debug.Assert(Monitor.IsEntered(_lock));
        if (_waitingForSpace.Count == 0)
        {
            return false;
        }

        long now = Time.GetTimestamp();
        while (_queuedItems < _queueCapacity && _waitingForSpace.RemoveFirst() is { } request)
        {
            EnqueueLocked(request, now);
        }

        return true;
    }

    internal void OnCanceled(Request<TIn, TOut> request, CancellationToken token)
    {
        bool removed = false, wake = false;
        lock (_lock)
        {
            switch (request.State)
            {
                case RequestState.Queued:
                    _queue.Remove(request);
                    _queuedItems--;
                    request.State = RequestState.Completed;
                    removed = true;
                    wake = AdmitWaitingLocked() && ShouldWakeLocked();
                    break;
                case RequestState.WaitingForSpace:
                    _waitingForSpace.Remove(request);
                    request.State = RequestState.Completed;
                    removed = true;
                    break;
            }
        }

        if (wake)
        {
            _signal.Set();
        }

        if (removed)
        {
            Telemetry.RequestsFinished(Outcomes.Cancelled, 1);
            request.SetException(new OperationCanceledException(token));
            request.Release();
            return;
        }

        // Its batch is running: release the caller now and let the batch drop the output. The batch still
        // holds its reference, so Batch and BatchGeneration stay valid here.
        if (request.TryClaimFromBatch())
        {
            Batch<TIn, TOut>? batch = request.Batch;
            int generation = request.BatchGeneration;
            Telemetry.RequestsFinished(Outcomes.Cancelled, 1);
            request.SetException(new OperationCanceledException(token));
            batch?.OnItemCanceled(generation);
        }
    }

    // Constants per instantiation once the JIT tiers up; they keep the check free of boxing for value types.
    private static readonly bool s_outputIsReference = !typeof(TOut).IsValueType;
    private static readonly bool s_outputIsNullable = Nullable.GetUnderlyingType(typeof(TOut)) is not null;

    internal bool IsMissing(TOut output)
    {
        switch (_outputCheck)
        {
            case OutputCheck.RejectNull:
                if (s_outputIsReference)
                {
                    return output is null;
                }

                return s_outputIsNullable && EqualityComparer<TOut>.Default.Equals(output, default!);
            case OutputCheck.RejectDefault:
                return EqualityComparer<TOut>.Default.Equals(output, default!);
            default:
                return false;
        }
    }

    internal BatchExecutionException HandlerFailure(Exception error, int batchSize) =>
        new($"The batch handler of '{DisplayName}' threw {error.GetType().Name} for a batch of {batchSize} item(s): {error.Message}", error, batchSize);

    internal BatchExecutionException MissingOutput(int index, int batchSize) =>
        new($"The batch handler of '{DisplayName}' returned without writing outputs[{index}] (it still held {(_outputCheck == OutputCheck.RejectNull ? "null" : "default")}); " +
            $"a handler must write one output per input. Set BatchingOptions.OutputCheck to None if {(_outputCheck == OutputCheck.RejectNull ? "null" : "default")} is a valid result.",
            null, batchSize);

    internal Exception TimeoutFailure(int batchSize) =>
        new TimeoutException($"The batch of {batchSize} item(s) in '{DisplayName}' did not complete within ExecutionTimeout ({ExecutionTimeout}); its handler was cancelled.");
}
