using System.Runtime.CompilerServices;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Batching.Diagnostics;
using Batching.Internal.Timing;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Batching.Internal.Generation;

/// <summary>The generation processor's state; one field, changed under the lock.</summary>
internal enum GenerationState
{
    /// <summary>Accepting sequences.</summary>
    Running,

    /// <summary>Disposal began: no new sequences; queued and active ones finish within the shutdown timeout.</summary>
    Draining,

    /// <summary>Stopped: every sequence has ended.</summary>
    Stopped,
}

/// <summary>
/// Iteration-level scheduling (continuous batching) over a user's step function: a set of active sequences kept
/// across steps; after every step, finished ones leave and waiting ones join.
/// </summary>
/// <remarks>
/// <para><b>The step loop</b> is not a thread: it is a runner (an async method on the thread pool) that owns the loop
/// while there is a sequence to step, and goes idle when there is none (<see cref="_loopRunning"/>). Each iteration
/// is a <em>boundary</em> under the lock (active sequences that ended leave, waiting ones join by the fair share while
/// <see cref="GenerationOptions.MaxSequences"/> and <see cref="GenerationOptions.MaxActiveWeight"/> allow, expired ones
/// fail, and the active sequences whose consumers have room are copied into the step's buffers), then the step,
/// outside the lock, then the delivery of its tokens, under each sequence's own lock only. Nothing a consumer does
/// runs on the loop: tokens resume waiting consumers on the thread pool.</para>
/// <para><b>Epochs.</b> A step that runs past <see cref="GenerationOptions.StepTimeout"/> is given up on by the step
/// timer, not by the loop (which may be blocked inside it): the timer's work item fails the step's sequences, bumps
/// <see cref="_epoch"/>, drops the step buffers (the hung step may still write them) and starts a new runner. A runner
/// whose epoch is stale when its step returns exits without touching anything. So a step that blocks its thread, or
/// never completes, costs its own sequences and never the others.</para>
/// <para><b>Exactly once.</b> A sequence's <see cref="Sequence{TPrompt, TState, TToken}.State"/> moves to Ended once,
/// under the lock, by whichever of completion (at the boundary after its last token), failure, step timeout,
/// cancellation, expiry or shutdown gets there first; only that one finishes its consumer.</para>
/// </remarks>
internal sealed partial class GenerationEngine<TPrompt, TState, TToken> : IGenerationProcessor<TPrompt, TToken>, IBatchingHealthContributor
{
    private readonly Lock _lock = new();
    private readonly Func<TPrompt, TState> _start;
    private readonly GenerationStep<TState, TToken> _step;
    private readonly Func<TState, int>? _weigh;
    private readonly int _maxSequences;
    private readonly long _maxActiveWeight;
    private readonly int _queueCapacity;
    private readonly bool _rejectWhenFull;
    private readonly int _maxTokens;
    private readonly int _bufferSize;
    private readonly int _priorityLevels;
    private readonly TimeSpan _stepTimeout;
    private readonly TimeSpan _shutdownTimeout;
    private readonly TimeProvider _time;
    private readonly SequenceLanes<TPrompt, TState, TToken> _lanes;
    private readonly List<Sequence<TPrompt, TState, TToken>> _active = [];
    private readonly PriorityQueue<Sequence<TPrompt, TState, TToken>, long> _deadlines = new();
    private readonly DeadlineTimer _stepTimer;
    private readonly DeadlineTimer _expiryTimer;
    private readonly GenerationTelemetry _telemetry;
    private readonly ILogger _logger;
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private GenerationState _state;
    private bool _loopRunning;
    private int _epoch;
    private int _activeCount;
    private long _activeWeight;
    private int _parkedCount;
    private int _liveDeadlines;
    private StepBuffers? _buffers;
    private bool _stepRunning;
    private int _stepCount;
    private long _stepDeadline = Timestamps.Never;
    private CancellationTokenSource _stepCts = new();
    private Task? _disposeTask;

    public GenerationEngine(Func<TPrompt, TState> start, GenerationStep<TState, TToken> step, GenerationOptions options, TimeProvider time,
        ILoggerFactory? loggerFactory, IMeterFactory? meterFactory)
    {
        _start = start;
        _step = step;
        _weigh = options.ResolveSequenceWeight<TState>();
        _maxSequences = options.MaxSequences;
        _maxActiveWeight = _weigh is null ? long.MaxValue : options.MaxActiveWeight;
        _queueCapacity = options.QueueCapacity;
        _rejectWhenFull = options.QueueFullMode == QueueFullMode.Reject;
        _maxTokens = options.MaxTokensPerSequence;
        _bufferSize = options.MaxBufferedTokens;
        _priorityLevels = options.PriorityLevels;
        _stepTimeout = options.StepTimeout;
        _shutdownTimeout = options.ShutdownTimeout;
        _time = time;
        Name = string.IsNullOrEmpty(options.Name) ? $"GenerationProcessor<{typeof(TPrompt).Name}, {typeof(TToken).Name}>" : options.Name;
        _lanes = new SequenceLanes<TPrompt, TState, TToken>(options.ResolvePriorityWeights());
        _logger = new GuardedLogger(loggerFactory?.CreateLogger("Batching.GenerationProcessor") ?? NullLogger.Instance);
        _telemetry = new GenerationTelemetry(Name, meterFactory, _logger, _priorityLevels, level => _lanes.CountIn(level), () => Volatile.Read(ref _activeCount));
        _stepTimer = DeadlineTimer.Create(time, () => ThreadPool.UnsafeQueueUserWorkItem(static e => e.OnStepTimer(), this, preferLocal: false), precise: true);
        _expiryTimer = DeadlineTimer.Create(time, () => ThreadPool.UnsafeQueueUserWorkItem(static e => e.OnExpiryTimer(), this, preferLocal: false), precise: true);
        Log.GenerationStarted(_logger, Name, _maxSequences, _queueCapacity, options.QueueFullMode, _maxTokens, _bufferSize, _stepTimeout);
    }

    public string Name { get; }

    public IAsyncEnumerable<TToken> GenerateAsync(TPrompt prompt, CancellationToken cancellationToken = default) =>
        new Sequence<TPrompt, TState, TToken>(this, prompt, default, cancellationToken, _bufferSize);

    public IAsyncEnumerable<TToken> GenerateAsync(TPrompt prompt, RequestOptions options, CancellationToken cancellationToken = default)
    {
        if ((uint)options.Priority >= (uint)_priorityLevels)
        {
            throw new ArgumentException($"RequestOptions.Priority must be between 0 and {_priorityLevels - 1} (GenerationOptions.PriorityLevels of '{Name}'); it was {options.Priority}.", nameof(options));
        }

        if (options.Timeout < TimeSpan.Zero && options.Timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentException($"RequestOptions.Timeout must be zero or more, or Timeout.InfiniteTimeSpan; it was {options.Timeout}.", nameof(options));
        }

        return new Sequence<TPrompt, TState, TToken>(this, prompt, options, cancellationToken, _bufferSize);
    }

    public GenerationLoad GetLoad()
    {
        lock (_lock)
        {
            return new GenerationLoad(_activeCount, _parkedCount, _lanes.Count, (int)Math.Min(_activeWeight, int.MaxValue), _maxSequences,
                (int)Math.Min(_maxActiveWeight, int.MaxValue), _queueCapacity, _state == GenerationState.Running);
        }
    }

    /// <summary>Starts a sequence at its first <c>MoveNextAsync</c>, on the consumer's thread: its state (user code),
    /// its weight, then its place in its lane. Returns why it was refused, or null.</summary>
    internal Exception? Start(Sequence<TPrompt, TState, TToken> sequence)
    {
        CancellationToken call = sequence.CallToken, enumerator = sequence.EnumeratorToken;
        if ((GenerationState)Volatile.Read(ref Unsafe.As<GenerationState, int>(ref _state)) != GenerationState.Running)
        {
            return Refused(Disposed(), Outcomes.Rejected);
        }

        if (call.IsCancellationRequested || enumerator.IsCancellationRequested)
        {
            return Refused(new OperationCanceledException(call.IsCancellationRequested ? call : enumerator), Outcomes.Cancelled);
        }

        TState state;
        int weight = 1;
        try
        {
            state = _start(sequence.Prompt);
            if (_weigh is not null)
            {
                weight = _weigh(state);
            }
        }
        catch (Exception ex)
        {
            return Refused(ex, Outcomes.Failed);
        }

        if (weight < 0 || weight > _maxActiveWeight)
        {
            return Refused(new ArgumentException($"The sequence weighs {weight} (GenerationOptions.SequenceWeight); it must be between 0 and MaxActiveWeight ({_maxActiveWeight}) of '{Name}'.", "prompt"), Outcomes.Rejected);
        }

        long now = _time.GetTimestamp();
        sequence.StepState = state;
        sequence.Weight = weight;
        sequence.ArrivalTimestamp = now;
        sequence.LastTokenTimestamp = now;
        sequence.Deadline = Timestamps.Add(now, sequence.QueueTimeout, _time.TimestampFrequency);
        sequence.Activity = _telemetry.StartRequestActivity(sequence.Priority);
        Exception? refused = null;
        lock (_lock)
        {
            if (_state != GenerationState.Running)
            {
                refused = Disposed();
            }
            else if (_rejectWhenFull && _lanes.Count >= _queueCapacity)
            {
                refused = new BatchQueueFullException($"The generation queue of '{Name}' is full ({_queueCapacity} sequences, GenerationOptions.QueueCapacity) and QueueFullMode is Reject; the sequence was not queued.");
            }
            else
            {
                sequence.State = SequenceState.Queued;
                _lanes.Add(sequence);
                if (sequence.Deadline != Timestamps.Never)
                {
                    _deadlines.Enqueue(sequence, sequence.Deadline);
                    _liveDeadlines++;
                }

                StartLoopLocked();
            }
        }

        if (refused is not null)
        {
            sequence.State = SequenceState.Ended;
            StopActivity(sequence, Outcomes.Rejected);
            _telemetry.RequestEnded(Outcomes.Rejected, 0);
            return refused;
        }

        _expiryTimer.ArmNoLaterThan(sequence.Deadline);
        sequence.Register(
            call.CanBeCanceled ? call.UnsafeRegister(static (s, t) => ((Sequence<TPrompt, TState, TToken>)s!).CancelFromToken(t), sequence) : default,
            enumerator.CanBeCanceled ? enumerator.UnsafeRegister(static (s, t) => ((Sequence<TPrompt, TState, TToken>)s!).CancelFromToken(t), sequence) : default);
        return null;
    }

    private Exception Refused(Exception error, string outcome)
    {
        _telemetry.RequestEnded(outcome, 0);
        return error;
    }

    private ObjectDisposedException Disposed() => new(Name, $"The generation processor '{Name}' is disposed and accepts no new sequences.");

    /// <summary>Removes a sequence that was cancelled (its token) or abandoned (its enumerator disposed, <paramref name="error"/> null)
    /// before it ended: before the next step, whatever it was doing.</summary>
    internal void Cancel(Sequence<TPrompt, TState, TToken> sequence, Exception? error)
    {
        lock (_lock)
        {
            if (!TryEndLocked(sequence))
            {
                return;
            }

            // A freed place may let a waiting sequence join, and a drained processor may finish disposing.
            WakeLocked();
        }

        EndOutsideLock(sequence, SequenceEnd.Cancelled, error, Outcomes.Cancelled);
    }

    /// <summary>A consumer read from a parked sequence's full buffer: it may take part in steps again.</summary>
    internal void Unparked()
    {
        lock (_lock)
        {
            StartLoopLocked();
        }
    }

    /// <summary>Moves an active or queued sequence to Ended and updates the counts; false when it already ended.</summary>
    private bool TryEndLocked(Sequence<TPrompt, TState, TToken> sequence)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        switch (sequence.State)
        {
            case SequenceState.Queued:
                _lanes.Remove(sequence);
                if (sequence.Deadline != Timestamps.Never)
                {
                    _liveDeadlines--;
                }

                break;
            case SequenceState.Active:
                _activeCount--;
                _activeWeight -= sequence.Weight;
                break;
            default:
                return false;
        }

        sequence.State = SequenceState.Ended;
        return true;
    }

    /// <summary>Finishes an ended sequence's consumer, records its outcome and lets go of its registrations; exactly
    /// once per sequence, by whoever ended it, never under the lock.</summary>
    private void EndOutsideLock(Sequence<TPrompt, TState, TToken> sequence, SequenceEnd end, Exception? error, string outcome)
    {
        Debug.Assert(!_lock.IsHeldByCurrentThread && sequence.State == SequenceState.Ended);
        sequence.Finish(end, error);
        _telemetry.RequestEnded(outcome, sequence.Produced);
        StopActivity(sequence, outcome);
        sequence.ReleaseRegistrations();
    }

    private void StopActivity(Sequence<TPrompt, TState, TToken> sequence, string outcome)
    {
        if (sequence.Activity is { } activity)
        {
            sequence.Activity = null;
            _telemetry.StopRequestActivity(activity, outcome, sequence.Produced);
        }
    }

    /// <summary>Starts a runner if the loop is idle; it decides at its first boundary whether there is work.</summary>
    private void StartLoopLocked()
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        if (_loopRunning || _state == GenerationState.Stopped)
        {
            return;
        }

        _loopRunning = true;
        int epoch = _epoch;
        ThreadPool.UnsafeQueueUserWorkItem(static s => _ = s.Engine.RunAsync(s.Epoch), (Engine: this, Epoch: epoch), preferLocal: false);
    }

    /// <summary>After a sequence left: wake the loop if someone waits to join, or finish draining.</summary>
    private void WakeLocked()
    {
        if (_lanes.Count > 0)
        {
            StartLoopLocked();
        }

        CheckDrainedLocked();
    }

    private void CheckDrainedLocked()
    {
        if (_state == GenerationState.Draining && _activeCount == 0 && _lanes.Count == 0)
        {
            _drained.TrySetResult();
        }
    }

    public HealthCheckResult CheckHealth()
    {
        GenerationLoad load = GetLoad();
        GenerationState state = (GenerationState)Volatile.Read(ref Unsafe.As<GenerationState, int>(ref _state));
        var data = new Dictionary<string, object>
        {
            ["state"] = state.ToString(),
            ["active_sequences"] = load.ActiveSequences,
            ["parked_sequences"] = load.ParkedSequences,
            ["queued_sequences"] = load.QueuedSequences,
            ["max_sequences"] = load.MaxSequences,
            ["queue_capacity"] = load.QueueCapacity,
        };
        if (state != GenerationState.Running)
        {
            return HealthCheckResult.Unhealthy($"'{Name}' is disposed and accepts no requests.", data: data);
        }

        if (load.QueuedSequences >= load.QueueCapacity * 0.9)
        {
            return HealthCheckResult.Degraded($"'{Name}' queue is near capacity ({load.QueuedSequences}/{load.QueueCapacity} sequences waiting).", data: data);
        }

        return HealthCheckResult.Healthy($"'{Name}': {load.ActiveSequences} active, {load.QueuedSequences} queued.", data: data);
    }

    /// <summary>The arrays one step runs over; replaced (never reused) after a step timed out, whose step may still write them.</summary>
    private sealed class StepBuffers(int capacity)
    {
        public Sequence<TPrompt, TState, TToken>[] Sequences = new Sequence<TPrompt, TState, TToken>[capacity];
        public TState[] States = new TState[capacity];
        public TToken[] Tokens = new TToken[capacity];
        public bool[] Finished = new bool[capacity];

        public void EnsureCapacity(int count)
        {
            if (count > Sequences.Length)
            {
                int size = Math.Max(count, Sequences.Length * 2);
                Array.Resize(ref Sequences, size);
                States = new TState[size];
                Tokens = new TToken[size];
                Finished = new bool[size];
            }
        }
    }
}
