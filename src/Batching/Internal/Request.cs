using System.Diagnostics;
using Batching.Internal.Execution;

namespace Batching.Internal;

/// <summary>Where a request is in its life.</summary>
/// <remarks>Transitions out of <see cref="WaitingForSpace"/> and <see cref="Queued"/> happen under the processor's
/// lock; out of <see cref="InBatch"/> by compare-and-swap (<see cref="Request{TIn, TOut}.TryClaimFromBatch"/>), so
/// exactly one party (the batch's completion, a cancellation, a timeout or shutdown) completes the caller.</remarks>
internal enum RequestState
{
    Free = 0,
    WaitingForSpace = 1,
    Queued = 2,
    InBatch = 3,
    Completed = 4,
}

/// <summary>The owner a request reports to: the processor that rented it.</summary>
internal interface IRequestOwner<TIn, TOut>
{
    /// <summary>The caller's token was cancelled; runs on the cancelling thread.</summary>
    void OnCanceled(Request<TIn, TOut> request);

    /// <summary>Nobody refers to the request any more: it may be reused.</summary>
    void Return(Request<TIn, TOut> request);
}

/// <summary>
/// One caller's item and the pooled awaitable its <see cref="ValueTask{TResult}"/> wraps.
/// </summary>
/// <remarks>
/// Two owners hold a request: the caller, until it consumes the result (exactly once, see
/// <see cref="ConsumeOnceValueTaskSource{T}"/>), and the engine, until no queue or batch refers to it. Each releases
/// one reference and the last one returns it to the pool, so a batch may keep pointing at a request whose caller has
/// already been cancelled and has consumed its result, and a misused <see cref="ValueTask{TResult}"/> can never
/// release a request that a running batch still holds. A caller that never awaits simply leaves it to the GC.
/// </remarks>
internal sealed class Request<TIn, TOut> : ConsumeOnceValueTaskSource<TOut>
{
    private static readonly Action<object?, CancellationToken> s_onCanceled =
        static (state, _) => { var request = (Request<TIn, TOut>)state!; request._owner.OnCanceled(request); };

    private readonly IRequestOwner<TIn, TOut> _owner;
    private CancellationTokenRegistration _registration;
    private CancellationToken _token;
    private int _state;
    private int _references;

    public Request(IRequestOwner<TIn, TOut> owner) => _owner = owner;

    public TIn Input = default!;

    /// <summary>When the caller called, on the processor's clock: MaxDelay and queue-wait metrics count from here,
    /// also for callers that first waited for queue space.</summary>
    public long ArrivalTimestamp;

    /// <summary>The caller's activity, captured only while someone traces, so the batch's activity can link to it.</summary>
    public ActivityContext CallerActivity;

    // Links of the intrusive list the request sits in (queue or waiting-for-space list); guarded by the processor's lock.
    public Request<TIn, TOut>? Next;
    public Request<TIn, TOut>? Previous;

    /// <summary>The link of the pool's free list, while the request is free.</summary>
    public Request<TIn, TOut>? NextFree;

    /// <summary>The batch carrying it and that batch's generation, so a late cancellation can tell a recycled batch apart.</summary>
    public Batch<TIn, TOut>? Batch;
    public int BatchGeneration;

    public RequestState State => (RequestState)Volatile.Read(ref _state);

    /// <summary>The token the caller passed, for the <see cref="OperationCanceledException"/> it receives.</summary>
    public CancellationToken CancellationToken => _token;

    public ValueTask<TOut> Prepare(TIn input, long arrivalTimestamp, CancellationToken token)
    {
        Debug.Assert(State == RequestState.Free);
        Input = input;
        ArrivalTimestamp = arrivalTimestamp;
        _token = token;
        _references = 2;
        return new ValueTask<TOut>(this, Token);
    }

    /// <summary>A transition made under the processor's lock (admission, dequeue, cancellation while queued).</summary>
    public void MoveTo(RequestState state) => Volatile.Write(ref _state, (int)state);

    public void RegisterCancellation()
    {
        if (_token.CanBeCanceled)
        {
            // The caller still holds its reference (it has not even received its ValueTask), so the request cannot be
            // recycled before this assignment; a callback that runs right away finds the field unset, which is harmless.
            _registration = _token.UnsafeRegister(s_onCanceled, this);
        }
    }

    /// <summary>Moves InBatch to Completed; false if someone else (cancellation, timeout, shutdown) completed it first.</summary>
    public bool TryClaimFromBatch() =>
        Interlocked.CompareExchange(ref _state, (int)RequestState.Completed, (int)RequestState.InBatch) == (int)RequestState.InBatch;

    /// <summary>Hands the caller its result; exactly once per use, by whoever moved the request to Completed.</summary>
    public void SetResult(TOut result, bool inline) => Complete(result, null, inline);

    public void SetException(Exception error, bool inline) => Complete(default!, error, inline);

    /// <summary>The engine no longer refers to the request. Never called under the processor's lock: the last release
    /// disposes the cancellation registration, which waits for a callback that may be waiting for that lock.</summary>
    public void ReleaseEngineReference() => Release();

    /// <summary>The request was refused before its ValueTask reached the caller: both references go at once.</summary>
    public void ReleaseUnissued()
    {
        Volatile.Write(ref _references, 1);
        Release();
    }

    protected override void OnConsumed() => Release();

    private void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0)
        {
            return;
        }

        // Dispose (not Unregister) waits for a cancellation callback that is running right now, so the request is
        // never reused under it; from inside the callback itself it does not wait.
        _registration.Dispose();
        _registration = default;
        _token = default;
        Input = default!;
        CallerActivity = default;
        Batch = null;
        Next = Previous = null;
        Volatile.Write(ref _state, (int)RequestState.Free);
        Reset();
        _owner.Return(this);
    }
}
