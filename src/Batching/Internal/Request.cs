using System.Buffers;
using System.Diagnostics;
using System.Threading.Tasks.Sources;
using Batching.Internal.Execution;
using Batching.Internal.Timing;

namespace Batching.Internal;

/// <summary>Where a request is in its life.</summary>
/// <remarks>Transitions out of <see cref="WaitingForSpace"/> and <see cref="Queued"/> happen under the processor's
/// lock; out of <see cref="InBatch"/> by compare-and-swap (<see cref="Request{TIn, TOut}.TryClaimFromBatch"/>), so
/// exactly one party (the batch's completion, a cancellation, a timeout or shutdown) completes the caller. A multi-item
/// call is Queued while any of its items is still in its lane (some may already run in batches), InBatch once every item
/// was dispatched, and Completed once it left the queue for good; its caller is completed once, under its part lock
/// (<see cref="Request{TIn, TOut}.PartSync"/>), by whoever records its last outstanding item or gives up on it.</remarks>
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
/// One caller's call, the queue entry that stands for its items, and the pooled awaitable its ValueTask wraps. A call
/// through <c>ProcessAsync</c> is one item; one through <c>ProcessManyAsync</c> is k items that may be split across
/// batches: the head entry of a lane is then partly taken (<see cref="NextIndex"/> moves on) and the rest stays queued.
/// </summary>
/// <remarks>
/// <para>References: the caller holds one until it consumes the result (exactly once, see
/// <see cref="ConsumeOnceValueTaskSource{T}"/>); the queue holds one while any item is queued or waiting for space;
/// every batch carrying a part holds one (the part that takes the last queued items inherits the queue's). The last
/// release returns it to the pool, so a misused ValueTask can never release a request that a running batch still holds.
/// A caller that never awaits simply leaves it to the GC.</para>
/// <para>A multi-item call's outcome is assembled under <see cref="PartSync"/>: each part's batch writes its outputs
/// into the caller's buffer and records its failures there, only while the call is not finished; cancellation marks it
/// finished under the same lock, so the caller's buffer is never written after the caller was released.</para>
/// </remarks>
internal sealed class Request<TIn, TOut> : ConsumeOnceValueTaskSource<TOut>, IValueTaskSource
{
    private static readonly Action<object?, CancellationToken> s_onCanceled =
        static (state, _) => { var request = (Request<TIn, TOut>)state!; request._owner.OnCanceled(request); };

    private readonly IRequestOwner<TIn, TOut> _owner;
    private CancellationTokenRegistration _registration;
    private CancellationToken _token;
    private int _state;
    private int _references;

    // Multi-item calls: how many items have no recorded outcome yet, whether the caller is finished, what failed.
    private Lock? _partSync;
    private int _outstanding;
    private bool _finished;
    private List<BatchItemFailure>? _failures;

    public Request(IRequestOwner<TIn, TOut> owner) => _owner = owner;

    public TIn Input = default!;

    /// <summary>When the caller called, on the processor's clock: MaxDelay, queue timeouts and queue-wait metrics count
    /// from here, also for callers that first waited for queue space.</summary>
    public long ArrivalTimestamp;

    /// <summary>The caller's activity, captured only while someone traces, so the batch's activity can link to it.</summary>
    public ActivityContext CallerActivity;

    // Links of the intrusive lane list the request sits in; guarded by the processor's lock.
    public Request<TIn, TOut>? Next;
    public Request<TIn, TOut>? Previous;

    /// <summary>The link of the pool's free list, while the request is free.</summary>
    public Request<TIn, TOut>? NextFree;

    /// <summary>The batch carrying a single-item request and that batch's generation, so a late cancellation can tell a recycled batch apart.</summary>
    public Batch<TIn, TOut>? Batch;
    public int BatchGeneration;

    /// <summary>The priority lane.</summary>
    public int Lane;

    /// <summary>When its queued items expire (RequestOptions.Timeout), or <see cref="Timestamps.Never"/>.</summary>
    public long Deadline;

    /// <summary>A single item's weight (0 when the processor has no ItemWeight).</summary>
    public int Weight;

    /// <summary>A multi-item call (its items are <see cref="Inputs"/>, its outcome a countdown).</summary>
    public bool IsMulti;
    public ReadOnlyMemory<TIn> Inputs;
    public Memory<TOut> Outputs;

    /// <summary>A multi-item call's item weights, rented; null without ItemWeight.</summary>
    public int[]? Weights;

    /// <summary>The call's items (1 for a single item).</summary>
    public int Items;

    /// <summary>The first item not yet dispatched to a batch.</summary>
    public int NextIndex;

    /// <summary>The end (exclusive) of the items still to dispatch: <see cref="Items"/>, unless shutdown dropped the
    /// items still waiting for queue space.</summary>
    public int End;

    /// <summary>Of the items not yet dispatched, how many are counted in the queue; the rest wait for space.</summary>
    public int Admitted;

    public int Remaining => End - NextIndex;

    public int Unadmitted => End - NextIndex - Admitted;

    public RequestState State => (RequestState)Volatile.Read(ref _state);

    /// <summary>The token the caller passed, for the <see cref="OperationCanceledException"/> it receives.</summary>
    public CancellationToken CancellationToken => _token;

    /// <summary>Guards a multi-item call's outputs and outcome.</summary>
    public Lock PartSync => _partSync!;

    public ValueTask<TOut> Prepare(TIn input, long arrivalTimestamp, CancellationToken token, int lane, long deadline, int weight)
    {
        Debug.Assert(State == RequestState.Free);
        Input = input;
        Weight = weight;
        Begin(1, arrivalTimestamp, token, lane, deadline);
        return new ValueTask<TOut>(this, Token);
    }

    public ValueTask PrepareMany(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, int[]? weights, long arrivalTimestamp, CancellationToken token, int lane, long deadline)
    {
        Debug.Assert(State == RequestState.Free && inputs.Length == outputs.Length && inputs.Length > 0);
        IsMulti = true;
        Inputs = inputs;
        Outputs = outputs;
        Weights = weights;
        Begin(inputs.Length, arrivalTimestamp, token, lane, deadline);
        _partSync ??= new Lock();
        _outstanding = inputs.Length;
        _finished = false;
        return new ValueTask(this, Token);
    }

    private void Begin(int items, long arrivalTimestamp, CancellationToken token, int lane, long deadline)
    {
        ArrivalTimestamp = arrivalTimestamp;
        _token = token;
        _references = 2;
        Lane = lane;
        Deadline = deadline;
        Items = End = items;
        NextIndex = 0;
        Admitted = 0;
    }

    /// <summary>The weight of item <paramref name="index"/> of the call.</summary>
    public int WeightAt(int index) => IsMulti ? Weights?[index] ?? 0 : Weight;

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

    /// <summary>A batch takes a part of a multi-item call that leaves items queued: it needs a reference of its own.
    /// Under the processor's lock, while the queue's reference keeps the request alive.</summary>
    public void AddBatchReference() => Interlocked.Increment(ref _references);

    /// <summary>Under <see cref="PartSync"/>: whether the caller of a multi-item call was already released (cancelled,
    /// or finished): a part's outputs must then not be written.</summary>
    public bool IsFinishedLocked => _finished;

    /// <summary>Under <see cref="PartSync"/>: items [<paramref name="start"/>, start + count) failed with <paramref name="error"/>.</summary>
    public void AddFailureLocked(int start, int count, Exception error)
    {
        Debug.Assert(_partSync!.IsHeldByCurrentThread && count > 0);
        (_failures ??= []).Add(new BatchItemFailure(start, count, error)); // sorted and merged once, by CompleteCall
    }

    /// <summary>Under <see cref="PartSync"/>: the outcomes of <paramref name="items"/> more items are recorded.</summary>
    /// <returns>Whether they were the last: the caller is finished now and must be completed (<see cref="CompleteCall"/>)
    /// once the lock is released.</returns>
    public bool EndItemsLocked(int items)
    {
        Debug.Assert(_partSync!.IsHeldByCurrentThread && items <= _outstanding);
        _outstanding -= items;
        if (_outstanding != 0 || _finished)
        {
            return false;
        }

        _finished = true;
        return true;
    }

    /// <summary>Under <see cref="PartSync"/>: releases the caller now, whatever is still outstanding (cancellation).</summary>
    /// <returns>False when it was already finished.</returns>
    public bool TryFinishNowLocked()
    {
        Debug.Assert(_partSync!.IsHeldByCurrentThread);
        if (_finished)
        {
            return false;
        }

        _finished = true;
        return true;
    }

    /// <summary>Completes a finished multi-item call from its recorded failures, outside every lock.</summary>
    /// <returns>The outcome, for the request counter.</returns>
    public string CompleteCall(string processorName, bool inline)
    {
        List<BatchItemFailure>? failures = _failures;
        if (failures is null || failures.Count == 0)
        {
            Complete(default!, null, inline);
            return Diagnostics.Outcomes.Completed;
        }

        // Parts complete in any order (several slots, expiry, shutdown): report in index order, adjacent runs of one cause merged.
        failures.Sort(static (a, b) => a.StartIndex.CompareTo(b.StartIndex));
        var merged = new List<BatchItemFailure>(failures.Count);
        foreach (BatchItemFailure failure in failures)
        {
            if (merged.Count > 0 && merged[^1] is var last && ReferenceEquals(last.Error, failure.Error) && last.StartIndex + last.Count == failure.StartIndex)
            {
                merged[^1] = last with { Count = last.Count + failure.Count };
            }
            else
            {
                merged.Add(failure);
            }
        }

        if (merged.Count == 1 && merged[0].Count == Items && merged[0].Error is not BatchExecutionException)
        {
            // One reason for every item (they all expired in the queue, or the processor stopped first): that reason.
            Exception only = merged[0].Error;
            Complete(default!, only, inline);
            return only is TimeoutException ? Diagnostics.Outcomes.Expired : Diagnostics.Outcomes.Failed;
        }

        BatchItemFailure[] list = [.. merged];
        int failed = 0;
        var message = new System.Text.StringBuilder();
        foreach (BatchItemFailure failure in list)
        {
            failed += failure.Count;
        }

        message.Append($"{failed} of the {Items} inputs of this ProcessManyAsync call to '{processorName}' failed (the outputs of the others were written):");
        for (int i = 0; i < list.Length && i < 8; i++)
        {
            BatchItemFailure f = list[i];
            string range = f.Count == 1 ? $"inputs[{f.StartIndex}]" : $"inputs[{f.StartIndex}..{f.StartIndex + f.Count - 1}]";
            message.Append($" {range}: {f.Error.GetType().Name}: {f.Error.Message}");
            message.Append(i == list.Length - 1 ? "" : ";");
        }

        if (list.Length > 8)
        {
            message.Append($" and {list.Length - 8} more run(s); see ItemFailures.");
        }

        Complete(default!, new BatchExecutionException(message.ToString(), list[0].Error, list), inline);
        return Diagnostics.Outcomes.Failed;
    }

    /// <summary>The engine no longer refers to the request (one reference: the queue's, or a batch's). Never called under
    /// the processor's lock: the last release disposes the cancellation registration, which waits for a callback that may
    /// be waiting for that lock.</summary>
    public void ReleaseEngineReference() => Release();

    /// <summary>The request was refused before its ValueTask reached the caller: both references go at once.</summary>
    public void ReleaseUnissued()
    {
        Volatile.Write(ref _references, 1);
        Release();
    }

    protected override void OnConsumed() => Release();

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        OnCompleted(continuation, state, token, flags);

    void IValueTaskSource.GetResult(short token) => GetResult(token);

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
        if (IsMulti)
        {
            IsMulti = false;
            Inputs = default;
            Outputs = default;
            if (Weights is { } weights)
            {
                ArrayPool<int>.Shared.Return(weights);
                Weights = null;
            }

            _failures = null;
        }

        Volatile.Write(ref _state, (int)RequestState.Free);
        Reset();
        _owner.Return(this);
    }
}
