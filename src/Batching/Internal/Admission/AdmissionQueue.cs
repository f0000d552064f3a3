using System.Diagnostics;

namespace Batching.Internal.Admission;

/// <summary>What <see cref="AdmissionQueue{TIn, TOut}.AdmitLocked"/> did with a request.</summary>
internal enum AdmissionResult
{
    /// <summary>In the queue, ready for a batch.</summary>
    Queued,

    /// <summary>The queue is full; the caller waits for space (FIFO) and is queued when space frees.</summary>
    WaitingForSpace,

    /// <summary>The queue is full and the processor rejects instead of waiting.</summary>
    Rejected,
}

/// <summary>
/// The admission side of a processor: the bounded FIFO of queued requests, the FIFO of callers waiting for space, their
/// counts, and unlinking on cancellation. It owns the processor's one lock; every member that ends in <c>Locked</c>
/// requires it, and every lock body of the processor ends by asserting <see cref="AssertInvariants"/> in DEBUG builds.
/// </summary>
/// <remarks>Counted in items. Today a request is one item; a request that stands for several (split across batches)
/// or several lanes behind this one admission point change what is linked here, not the engine around it.</remarks>
internal sealed class AdmissionQueue<TIn, TOut>(int capacity, bool rejectWhenFull)
{
    private RequestList<TIn, TOut> _queued;
    private RequestList<TIn, TOut> _waiting;
    private long _arrivals;

    /// <summary>The processor's lock.</summary>
    public Lock Sync { get; } = new();

    public int Capacity { get; } = capacity;

    /// <summary>Items queued; read without the lock by gauges (a torn read is impossible for an int).</summary>
    public int QueuedItems => _queued.Count;

    public int WaitingForSpace => _waiting.Count;

    /// <summary>Items ever queued, for arrival-rate estimates.</summary>
    public long Arrivals => _arrivals;

    /// <summary>When the oldest queued request arrived; requires a non-empty queue.</summary>
    public long OldestArrivalLocked
    {
        get
        {
            Debug.Assert(Sync.IsHeldByCurrentThread && _queued.Head is not null);
            return _queued.Head!.ArrivalTimestamp;
        }
    }

    public AdmissionResult AdmitLocked(Request<TIn, TOut> request)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread && request.State == RequestState.Free);
        if (_queued.Count < Capacity && _waiting.Count == 0)
        {
            EnqueueLocked(request);
            return AdmissionResult.Queued;
        }

        if (rejectWhenFull)
        {
            return AdmissionResult.Rejected;
        }

        request.MoveTo(RequestState.WaitingForSpace);
        _waiting.AddLast(request);
        return AdmissionResult.WaitingForSpace;
    }

    /// <summary>Removes the oldest queued request for a batch; the caller marks it InBatch.</summary>
    public Request<TIn, TOut> DequeueLocked()
    {
        Debug.Assert(Sync.IsHeldByCurrentThread && _queued.Count > 0);
        return _queued.RemoveFirst()!;
    }

    /// <summary>Moves callers waiting for space into the queue, oldest first, as far as capacity allows. Their arrival
    /// time stays the time they called.</summary>
    /// <returns>Whether any was admitted.</returns>
    public bool AdmitWaitingLocked()
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        bool admitted = false;
        while (_queued.Count < Capacity && _waiting.RemoveFirst() is { } request)
        {
            EnqueueLocked(request);
            admitted = true;
        }

        return admitted;
    }

    /// <summary>Unlinks a cancelled request that is still queued or waiting for space and marks it Completed.</summary>
    /// <returns>Whether it was found there (otherwise it is in a batch or already completed).</returns>
    public bool TryRemoveLocked(Request<TIn, TOut> request)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        switch (request.State)
        {
            case RequestState.Queued:
                _queued.Remove(request);
                break;
            case RequestState.WaitingForSpace:
                _waiting.Remove(request);
                break;
            default:
                return false;
        }

        request.MoveTo(RequestState.Completed);
        AdmitWaitingLocked();
        return true;
    }

    /// <summary>Removes every caller waiting for space (shutdown), marking each Completed.</summary>
    public void RemoveAllWaitingLocked(List<Request<TIn, TOut>> into)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        while (_waiting.RemoveFirst() is { } request)
        {
            request.MoveTo(RequestState.Completed);
            into.Add(request);
        }
    }

    /// <summary>Removes every queued and waiting request (abort), marking each Completed.</summary>
    public void RemoveAllLocked(List<Request<TIn, TOut>> into)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        while (_queued.RemoveFirst() is { } request)
        {
            request.MoveTo(RequestState.Completed);
            into.Add(request);
        }

        RemoveAllWaitingLocked(into);
    }

    [Conditional("DEBUG")]
    public void AssertInvariants()
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        Debug.Assert(_queued.Count >= 0 && _queued.Count <= Capacity, $"queued {_queued.Count} outside 0..{Capacity}");
        Debug.Assert(_waiting.Count == 0 || _queued.Count == Capacity, "callers wait for space while the queue has room");
        Debug.Assert((_queued.Count == 0) == (_queued.Head is null));
        Debug.Assert(_queued.Head is null || _queued.Head.State == RequestState.Queued);
    }

    private void EnqueueLocked(Request<TIn, TOut> request)
    {
        request.MoveTo(RequestState.Queued);
        _queued.AddLast(request);
        _arrivals++;
    }
}
