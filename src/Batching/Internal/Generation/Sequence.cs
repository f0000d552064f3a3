using System.Diagnostics;

namespace Batching.Internal.Generation;

/// <summary>Where a sequence is in its life; changed only under the engine's lock.</summary>
internal enum SequenceState
{
    /// <summary>Returned by <c>GenerateAsync</c>, not enumerated yet: nothing queued.</summary>
    Created,

    /// <summary>In its priority lane, waiting to join the batch.</summary>
    Queued,

    /// <summary>In the batch: it takes part in every step unless parked (its consumer's buffer is full).</summary>
    Active,

    /// <summary>Done: completed, failed, cancelled or expired. Its consumer may still be draining buffered tokens.</summary>
    Ended,
}

/// <summary>How a sequence ended, as its consumer sees it.</summary>
internal enum SequenceEnd
{
    None,
    Completed,
    Failed,
    Cancelled,
}

/// <summary>What the consumer side of a sequence is doing.</summary>
internal enum ConsumerPhase
{
    /// <summary>Not inside a <c>MoveNextAsync</c>.</summary>
    Idle,

    /// <summary>A <c>MoveNextAsync</c> is pending on the source.</summary>
    Waiting,

    /// <summary>The pending <c>MoveNextAsync</c> was completed and not yet consumed.</summary>
    Completed,
}

/// <summary>
/// One generation request: the enumerable a caller gets, its enumerator, the <c>IValueTaskSource</c>
/// behind its <c>MoveNextAsync</c>, its state while it waits and between steps, and its token buffer.
/// </summary>
/// <remarks>
/// <para>Two locks, never nested the other way: the engine's lock guards the life cycle (<see cref="State"/>, the lane
/// links, the batch membership); the sequence's own lock guards what producer and consumer share (the bounded token
/// ring, how many tokens were produced, the end, the consumer's phase, the parked mark). The engine may take a
/// sequence's lock while holding its own (to see at a step boundary whether the buffer has room); a consumer never
/// takes the engine's lock while holding the sequence's.</para>
/// <para>Tokens flow: the step loop writes the token straight into <see cref="Current"/> when the consumer waits (and
/// resumes it on the thread pool, never on the loop's thread), else appends it to the ring. A ring that is full parks
/// the sequence at the next boundary; the consumer's read that makes room unparks it.</para>
/// </remarks>
internal sealed class Sequence<TPrompt, TState, TToken> : ConsumeOnceValueTaskSource<bool>, IAsyncEnumerable<TToken>, IAsyncEnumerator<TToken>, IThreadPoolWorkItem
{
    private readonly GenerationEngine<TPrompt, TState, TToken> _engine;
    private readonly Lock _sync = new();
    private readonly TToken[] _ring;
    private int _head, _count;
    private int _produced;
    private bool _producerDone;
    private bool _parked;
    private SequenceEnd _end;
    private Exception? _error;
    private ConsumerPhase _consumer;
    private bool _enumerated, _started, _disposed;
    private CancellationToken _enumeratorToken;
    private CancellationTokenRegistration _callToken, _enumeratorRegistration;
    private bool _registrationsReleased;
    private bool _resumeResult;
    private Exception? _resumeError;

    public Sequence(GenerationEngine<TPrompt, TState, TToken> engine, TPrompt prompt, RequestOptions options, CancellationToken cancellationToken, int bufferSize)
    {
        _engine = engine;
        Prompt = prompt;
        Priority = options.Priority;
        QueueTimeout = options.Timeout;
        CallToken = cancellationToken;
        _ring = new TToken[bufferSize];
    }

    public TPrompt Prompt { get; private set; }

    public int Priority { get; }

    public TimeSpan QueueTimeout { get; }

    public CancellationToken CallToken { get; }

    public CancellationToken EnumeratorToken => _enumeratorToken;

    // Engine-owned (its lock, or the step loop between boundaries).
    public SequenceState State { get; set; }

    public TState StepState = default!;

    public int Weight { get; set; }

    public long Deadline { get; set; } = Timing.Timestamps.Never;

    public long ArrivalTimestamp { get; set; }

    public long LastTokenTimestamp { get; set; }

    public Activity? Activity { get; set; }

    public Sequence<TPrompt, TState, TToken>? Previous { get; set; }

    public Sequence<TPrompt, TState, TToken>? Next { get; set; }

    /// <summary>Tokens produced so far; written by the step loop only.</summary>
    public int Produced => _produced;

    public TToken Current { get; private set; } = default!;

    public IAsyncEnumerator<TToken> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        lock (_sync)
        {
            if (_enumerated)
            {
                throw new InvalidOperationException("A sequence returned by GenerateAsync can be enumerated once; call GenerateAsync again for another generation.");
            }

            _enumerated = true;
            _enumeratorToken = cancellationToken;
        }

        return this;
    }

    public ValueTask<bool> MoveNextAsync()
    {
        if (!_started)
        {
            _started = true;
            if (_engine.Start(this) is { } refused)
            {
                return ValueTask.FromException<bool>(refused);
            }
        }

        bool unpark = false;
        short token;
        lock (_sync)
        {
            if (_consumer != ConsumerPhase.Idle)
            {
                throw new InvalidOperationException("MoveNextAsync was called again before the ValueTask of the previous call was awaited.");
            }

            if (_disposed)
            {
                return new ValueTask<bool>(false);
            }

            if (_end == SequenceEnd.Cancelled)
            {
                return _error is null ? new ValueTask<bool>(false) : ValueTask.FromException<bool>(_error);
            }

            if (_count > 0)
            {
                Current = _ring[_head];
                _ring[_head] = default!;
                _head = (_head + 1) % _ring.Length;
                _count--;
                unpark = _parked;
                _parked = false;
            }
            else if (_end != SequenceEnd.None)
            {
                return _end == SequenceEnd.Completed ? new ValueTask<bool>(false) : ValueTask.FromException<bool>(_error!);
            }
            else
            {
                Reset();
                _consumer = ConsumerPhase.Waiting;
                token = Token;
                goto Pending;
            }
        }

        if (unpark)
        {
            _engine.Unparked();
        }

        return new ValueTask<bool>(true);

    Pending:
        return new ValueTask<bool>(this, token);
    }

    public ValueTask DisposeAsync()
    {
        lock (_sync)
        {
            if (_disposed)
            {
                return default;
            }

            _disposed = true;
        }

        if (_started)
        {
            _engine.Cancel(this, null);
        }

        return default;
    }

    /// <summary>A cancellation token's callback.</summary>
    public void CancelFromToken(CancellationToken token) => _engine.Cancel(this, new OperationCanceledException("The generation was cancelled by its token.", token));

    protected override void OnConsumed()
    {
        lock (_sync)
        {
            _consumer = ConsumerPhase.Idle;
        }
    }

    /// <summary>Whether the ring has room for one more token; at a step boundary, under the engine's lock. A full ring
    /// marks the sequence parked, so that the read which makes room wakes the engine.</summary>
    public bool TryKeepStepping()
    {
        lock (_sync)
        {
            if (_count < _ring.Length)
            {
                return true;
            }

            _parked = true;
            return false;
        }
    }

    /// <summary>Hands one token from a step to the consumer. Returns whether the sequence is done producing (it marked
    /// itself finished, or reached <paramref name="maxTokens"/>); false, and nothing delivered, when it ended meanwhile.</summary>
    public bool Deliver(TToken token, bool finished, int maxTokens, out bool delivered)
    {
        bool resume = false;
        lock (_sync)
        {
            if (_end != SequenceEnd.None || _producerDone)
            {
                delivered = false;
                return false;
            }

            _produced++;
            _producerDone = finished || _produced >= maxTokens;
            if (_consumer == ConsumerPhase.Waiting)
            {
                Current = token;
                _consumer = ConsumerPhase.Completed;
                resume = true;
            }
            else
            {
                Debug.Assert(_count < _ring.Length, "A parked sequence took part in a step.");
                _ring[(_head + _count) % _ring.Length] = token;
                _count++;
            }

            delivered = true;
        }

        if (resume)
        {
            Resume(true, null);
        }

        return _producerDone;
    }

    /// <summary>Records how the sequence ended and releases a waiting consumer; called once, by whoever moved it to
    /// <see cref="SequenceState.Ended"/>, outside the engine's lock. Buffered tokens are still delivered unless it was cancelled.</summary>
    public void Finish(SequenceEnd end, Exception? error)
    {
        bool resume = false;
        lock (_sync)
        {
            Debug.Assert(_end == SequenceEnd.None);
            _end = end;
            _error = error;
            if (end == SequenceEnd.Cancelled)
            {
                Array.Clear(_ring);
                _count = 0;
            }

            if (_consumer == ConsumerPhase.Waiting && _count == 0)
            {
                _consumer = ConsumerPhase.Completed;
                resume = true;
            }
        }

        if (resume)
        {
            Resume(false, end == SequenceEnd.Completed ? null : error);
        }
    }

    /// <summary>Resumes the waiting consumer on the thread pool: its code must never run on (and so never block) the
    /// step loop. The sequence is its own work item (one resumption at a time), so a token costs no allocation.</summary>
    private void Resume(bool result, Exception? error)
    {
        _resumeResult = result;
        _resumeError = error;
        ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
    }

    void IThreadPoolWorkItem.Execute() => Complete(_resumeResult, _resumeError, inline: true);

    /// <summary>Keeps the cancellation registrations until the sequence ends (then disposes them; outside every lock).</summary>
    public void Register(CancellationTokenRegistration call, CancellationTokenRegistration enumerator)
    {
        bool release;
        lock (_sync)
        {
            _callToken = call;
            _enumeratorRegistration = enumerator;
            release = _registrationsReleased;
        }

        if (release)
        {
            call.Dispose();
            enumerator.Dispose();
        }
    }

    /// <summary>Disposes the cancellation registrations once the sequence ended, and lets go of the prompt.</summary>
    public void ReleaseRegistrations()
    {
        CancellationTokenRegistration call, enumerator;
        lock (_sync)
        {
            _registrationsReleased = true;
            (call, enumerator) = (_callToken, _enumeratorRegistration);
            _callToken = _enumeratorRegistration = default;
        }

        // Dispose waits for a callback running on another thread; the callback takes only the engine's lock, which
        // the caller does not hold.
        call.Dispose();
        enumerator.Dispose();
        Prompt = default!;
        StepState = default!;
    }
}
