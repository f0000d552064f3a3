using System.Diagnostics;
using System.Threading.Tasks.Sources;

namespace Batching.Internal;

/// <summary>Where a request is in its life. Transitions out of <see cref="Queued"/> and <see cref="WaitingForSpace"/>
/// happen under the processor's lock; out of <see cref="InBatch"/> by compare-and-swap, so exactly one party completes it.</summary>
internal enum RequestState
{
    Free = 0,
    WaitingForSpace = 1,
    Queued = 2,
    InBatch = 3,
    Completed = 4,
}

/// <summary>
/// One caller's item and the pooled awaitable its <see cref="ValueTask{TResult}"/> wraps.
/// </summary>
/// <remarks>
/// Two owners hold a request: the caller, until it reads the result, and the engine, until no queue or batch
/// refers to it. Each releases one reference; the last one returns it to the pool. This is what lets a batch keep
/// a pointer to a request that its caller has already cancelled and consumed without the request being recycled
/// underneath it.
/// </remarks>
internal sealed class Request<TIn, TOut> : IValueTaskSource<TOut>
{
    private static readonly Action<object?, CancellationToken> s_onCanceled =
        static (state, token) => ((Request<TIn, TOut>)state!)._engine.OnCanceled((Request<TIn, TOut>)state!, token);

    private readonly BatchEngine<TIn, TOut> _engine;
    private ManualResetValueTaskSourceCore<TOut> _core;
    private CancellationTokenRegistration _registration;
    private int _state;
    private int _references;

    public Request(BatchEngine<TIn, TOut> engine)
    {
        _engine = engine;
        _core.RunContinuationsAsynchronously = true;
    }

    public TIn Input = default!;
    public long EnqueuedTimestamp;

    // The caller's activity, captured only while someone traces, so the batch's activity can link to it.
    public ActivityContext CallerActivity;

    // Links of the intrusive list the request sits in (queue or waiting-for-space list); guarded by the engine lock.
    public Request<TIn, TOut>? Next;
    public Request<TIn, TOut>? Previous;

    // The batch carrying it and that batch's generation, so a late cancellation can tell a recycled batch apart.
    public Batch<TIn, TOut>? Batch;
    public int BatchGeneration;

    public RequestState State
    {
        get => (RequestState)Volatile.Read(ref _state);
        set => Volatile.Write(ref _state, (int)value);
    }

    public ValueTask<TOut> AsValueTask() => new(this, _core.Version);

    public void Prepare(TIn input)
    {
        Input = input;
        _references = 2;
    }

    public void RegisterCancellation(CancellationToken token)
    {
        if (token.CanBeCanceled)
        {
            _registration = token.UnsafeRegister(s_onCanceled, this);
        }
    }

    /// <summary>Moves InBatch to Completed; false if someone else (cancellation, timeout) completed it first.</summary>
    public bool TryClaimFromBatch() =>
        Interlocked.CompareExchange(ref _state, (int)RequestState.Completed, (int)RequestState.InBatch) == (int)RequestState.InBatch;

    public void SetResult(TOut result) => _core.SetResult(result);

    public void SetException(Exception exception) => _core.SetException(exception);

    /// <summary>Drops one owner's reference; the last one resets the request and returns it to the pool.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0)
        {
            Input = default!;
            CallerActivity = default;
            Batch = null;
            Next = Previous = null;
            _state = (int)RequestState.Free;
            _core.Reset();
            _engine.ReturnToPool(this);
        }
    }

    TOut IValueTaskSource<TOut>.GetResult(short token)
    {
        if (token != _core.Version)
        {
            // A second await of the same ValueTask: fail it without touching the references of the first.
            throw new InvalidOperationException("A ValueTask returned by ProcessAsync was awaited more than once; await it exactly once.");
        }

        try
        {
            return _core.GetResult(token);
        }
        finally
        {
            // Dispose (not Unregister) waits for a cancellation callback that is running right now, so the
            // request cannot be recycled under it.
            _registration.Dispose();
            _registration = default;
            Release();
        }
    }

    ValueTaskSourceStatus IValueTaskSource<TOut>.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource<TOut>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
