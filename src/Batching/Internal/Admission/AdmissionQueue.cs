using System.Diagnostics;
using Batching.Internal.Timing;

namespace Batching.Internal.Admission;

/// <summary>What <see cref="AdmissionQueue{TIn, TOut}.AdmitLocked"/> did with a request.</summary>
internal enum AdmissionResult
{
    /// <summary>In the queue (all its items, or, for a call larger than the room left, the first of them), ready for a batch.</summary>
    Queued,

    /// <summary>The queue is full; the caller waits for space and is queued when space frees.</summary>
    WaitingForSpace,

    /// <summary>The items do not fit and the processor rejects instead of waiting: nothing was queued.</summary>
    Rejected,
}

/// <summary>Items that left the queue without being dispatched (cancelled, expired, shut down): items
/// [<see cref="Start"/>, Start + <see cref="Count"/>) of <see cref="Request"/>. When <see cref="Unlinked"/>, the request
/// left its lane and whoever fails these items also releases the queue's reference (outside the lock).</summary>
internal readonly record struct Removal<TIn, TOut>(Request<TIn, TOut> Request, int Start, int Count, bool Unlinked);

/// <summary>
/// The admission side of a processor: one FIFO lane of requests per priority level behind one admission point, counted
/// in items; the callers waiting for space (each lane's tail); the fair share that batches and admissions draw by; and
/// the requests' queue deadlines. It owns the processor's one lock; every member that ends in <c>Locked</c> requires
/// it, and every lock body of the processor ends by asserting <see cref="AssertInvariants"/> in DEBUG builds.
/// </summary>
/// <remarks>
/// <para>A lane is an intrusive list of requests in arrival order. Its items counted in the queue (admitted) form a
/// prefix: a request waiting for space, and every request behind it in that lane, is in the list but admitted only as
/// room frees (<see cref="AdmitWaitingLocked"/>), from <c>FirstWaiting</c> on. A multi-item request may be partly
/// dispatched (its <see cref="Request{TIn, TOut}.NextIndex"/> moves on while it stays at the head) and partly
/// admitted.</para>
/// <para><b>Fair share.</b> Batches are filled by deficit round robin over the lanes with dispatchable items, in items:
/// the lane whose turn it is takes up to its weight in items, then the turn moves on; the turn and what is left of it
/// persist across batches. So while a set of lanes has work, every full round dispatches exactly weight[i] items from
/// each lane i of the set, and over any window each lane with work throughout receives its share of the items
/// dispatched less at most one round (the sum of the weights). Callers waiting for space are admitted by the same rule,
/// so a flood at one level cannot keep another out of the queue either. With one lane this is a plain FIFO.</para>
/// <para><b>Deadlines.</b> Requests with a queue timeout are kept in a min-heap by deadline, deleted lazily: an entry
/// whose request is no longer queued (or was reused with another deadline) is dropped when it reaches the top, and the
/// heap is rebuilt from its live entries when stale ones outnumber them.</para>
/// </remarks>
internal sealed class AdmissionQueue<TIn, TOut>
{
    private readonly Lane[] _lanes;
    private readonly int[] _weights;
    private readonly bool _rejectWhenFull;
    private readonly PriorityQueue<Request<TIn, TOut>, long> _deadlines = new();
    private readonly List<(Request<TIn, TOut>, long)> _rebuild = [];
    private int _queuedItems;
    private int _waitingItems;
    private long _arrivals;
    private int _liveDeadlines;
    private int _turn, _turnLeft;
    private int _admitTurn, _admitTurnLeft;

    public AdmissionQueue(int capacity, bool rejectWhenFull, int[] weights)
    {
        Capacity = capacity;
        _rejectWhenFull = rejectWhenFull;
        _weights = weights;
        _lanes = new Lane[weights.Length];
        _turnLeft = weights[0];
        _admitTurnLeft = weights[0];
    }

    /// <summary>The processor's lock.</summary>
    public Lock Sync { get; } = new();

    public int Capacity { get; }

    public int Lanes => _lanes.Length;

    /// <summary>Items queued, over every lane; read without the lock by gauges (a torn read is impossible for an int).</summary>
    public int QueuedItems => _queuedItems;

    /// <summary>Items of callers waiting for space.</summary>
    public int WaitingItems => _waitingItems;

    /// <summary>Items queued in <paramref name="lane"/>.</summary>
    public int QueuedItemsIn(int lane) => _lanes[lane].Items;

    /// <summary>Items of callers waiting for space in <paramref name="lane"/>.</summary>
    public int WaitingItemsIn(int lane) => _lanes[lane].WaitingItems;

    /// <summary>Items ever queued, for arrival-rate estimates.</summary>
    public long Arrivals => _arrivals;

    /// <summary>The weight of <paramref name="lane"/> in the fair share.</summary>
    public int WeightOf(int lane) => _weights[lane];

    /// <summary>When the oldest queued item arrived, over the heads of every lane; requires a non-empty queue.</summary>
    public long OldestArrivalLocked
    {
        get
        {
            Debug.Assert(Sync.IsHeldByCurrentThread && _queuedItems > 0);
            long oldest = long.MaxValue;
            foreach (ref Lane lane in _lanes.AsSpan())
            {
                if (lane.Items > 0 && lane.List.Head!.ArrivalTimestamp < oldest)
                {
                    oldest = lane.List.Head.ArrivalTimestamp;
                }
            }

            return oldest;
        }
    }

    /// <summary>Queues a prepared request: all its items, or (Wait mode) as many as there is room for while the rest
    /// wait; or rejects it whole.</summary>
    public AdmissionResult AdmitLocked(Request<TIn, TOut> request)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread && request.State == RequestState.Free);
        int items = request.Remaining;
        int room = _waitingItems == 0 ? Capacity - _queuedItems : 0;
        if (items > room && _rejectWhenFull)
        {
            return AdmissionResult.Rejected;
        }

        int admitted = Math.Min(items, room);
        ref Lane lane = ref _lanes[request.Lane];
        request.Admitted = admitted;
        request.MoveTo(admitted > 0 ? RequestState.Queued : RequestState.WaitingForSpace);
        lane.List.AddLast(request);
        lane.Items += admitted;
        _queuedItems += admitted;
        _arrivals += admitted;
        if (admitted < items)
        {
            lane.WaitingItems += items - admitted;
            _waitingItems += items - admitted;
            lane.FirstWaiting ??= request;
        }

        if (request.Deadline != Timestamps.Never)
        {
            TrackDeadlineLocked(request);
        }

        return admitted > 0 ? AdmissionResult.Queued : AdmissionResult.WaitingForSpace;
    }

    /// <summary>
    /// Takes the next part for a batch being formed: up to <paramref name="maxItems"/> items of the head request of the
    /// lane whose turn it is, within <paramref name="weightLeft"/> (when <paramref name="weighted"/>). A lane whose head
    /// item is too heavy for what is left sits out the rest of this batch (<paramref name="blockedLanes"/>).
    /// </summary>
    /// <returns>False when no lane can contribute.</returns>
    /// <remarks>The batch holds one reference per part: the part that takes a request's last queued items inherits the
    /// queue's, any other part adds one.</remarks>
    public bool TryTakePartLocked(int maxItems, bool weighted, ref long weightLeft, ref int blockedLanes,
        out Request<TIn, TOut> request, out int start, out int count)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread && maxItems > 0);
        request = null!;
        start = count = 0;
        if (_queuedItems == 0)
        {
            return false;
        }

        if (!weighted && _lanes.Length == 1)
        {
            // One lane, no weights: the head's admitted items, FIFO (the common case, kept short).
            ref Lane only = ref _lanes[0];
            Request<TIn, TOut> first = only.List.Head!;
            int take = Math.Min(maxItems, first.Admitted);
            TakeLocked(ref only, first, take);
            request = first;
            start = first.NextIndex - take;
            count = take;
            return true;
        }

        int lanes = _lanes.Length;
        for (int visited = 0; visited <= lanes; visited++)
        {
            ref Lane lane = ref _lanes[_turn];
            int credit = lanes == 1 ? int.MaxValue : _turnLeft;
            if (lane.Items > 0 && (blockedLanes & (1 << _turn)) == 0 && credit > 0)
            {
                Request<TIn, TOut> head = lane.List.Head!;
                int n = Math.Min(Math.Min(maxItems, head.Admitted), credit);
                if (weighted)
                {
                    n = FitWeight(head, n, ref weightLeft);
                }

                if (n > 0)
                {
                    TakeLocked(ref lane, head, n);
                    if (lanes > 1)
                    {
                        _turnLeft -= n;
                    }

                    request = head;
                    start = head.NextIndex - n;
                    count = n;
                    return true;
                }

                blockedLanes |= 1 << _turn;
            }

            if (lanes == 1)
            {
                return false;
            }

            // Next lane's turn. A lane without work forfeits its turn (deficit round robin resets an empty lane).
            _turn = _turn + 1 == lanes ? 0 : _turn + 1;
            _turnLeft = _weights[_turn];
        }

        return false;
    }

    private static int FitWeight(Request<TIn, TOut> head, int n, ref long weightLeft)
    {
        int fits = 0;
        long left = weightLeft;
        for (int i = head.NextIndex; fits < n; i++, fits++)
        {
            int weight = head.WeightAt(i);
            if (weight > left)
            {
                break;
            }

            left -= weight;
        }

        weightLeft = left;
        return fits;
    }

    private void TakeLocked(ref Lane lane, Request<TIn, TOut> head, int n)
    {
        head.NextIndex += n;
        head.Admitted -= n;
        lane.Items -= n;
        _queuedItems -= n;
        if (head.Remaining == 0)
        {
            // Its last items: the request leaves the lane and this part inherits the queue's reference.
            lane.List.RemoveFirst();
            head.MoveTo(RequestState.InBatch);
            if (head.Deadline != Timestamps.Never)
            {
                _liveDeadlines--;
            }
        }
        else
        {
            head.AddBatchReference();
        }
    }

    /// <summary>Moves items of callers waiting for space into the queue, as far as capacity allows, by the fair share
    /// over the lanes with waiters. Their arrival time stays the time they called.</summary>
    /// <returns>Whether any was admitted.</returns>
    public bool AdmitWaitingLocked()
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        bool admitted = false;
        int lanes = _lanes.Length;
        while (_waitingItems > 0 && _queuedItems < Capacity)
        {
            ref Lane lane = ref _lanes[_admitTurn];
            int credit = lanes == 1 ? int.MaxValue : _admitTurnLeft;
            if (lane.WaitingItems == 0 || credit <= 0)
            {
                _admitTurn = _admitTurn + 1 == lanes ? 0 : _admitTurn + 1;
                _admitTurnLeft = _weights[_admitTurn];
                continue;
            }

            Request<TIn, TOut> first = lane.FirstWaiting!;
            int n = Math.Min(Math.Min(Capacity - _queuedItems, first.Unadmitted), credit);
            first.Admitted += n;
            first.MoveTo(RequestState.Queued);
            lane.Items += n;
            lane.WaitingItems -= n;
            _queuedItems += n;
            _waitingItems -= n;
            _arrivals += n;
            if (lanes > 1)
            {
                _admitTurnLeft -= n;
            }

            if (first.Unadmitted == 0)
            {
                lane.FirstWaiting = first.Next; // every request behind it waits whole
            }

            admitted = true;
        }

        return admitted;
    }

    /// <summary>Unlinks a request that is still queued or waiting for space, with whatever of it is not dispatched yet
    /// (cancellation).</summary>
    /// <returns>The items removed, or null when it is not in a lane (in a batch, or completed).</returns>
    public Removal<TIn, TOut>? TryRemoveLocked(Request<TIn, TOut> request)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        if (request.State is not (RequestState.Queued or RequestState.WaitingForSpace))
        {
            return null;
        }

        Removal<TIn, TOut> removal = UnlinkLocked(request);
        AdmitWaitingLocked();
        return removal;
    }

    /// <summary>Removes every request whose queue deadline is <paramref name="now"/> or earlier, into <paramref name="into"/>
    /// (created when the first one expires).</summary>
    public void ExpireLocked(long now, ref List<Removal<TIn, TOut>>? into)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        bool removed = false;
        while (_deadlines.TryPeek(out Request<TIn, TOut>? request, out long deadline) && deadline <= now)
        {
            _deadlines.Dequeue();
            if (IsLive(request, deadline))
            {
                (into ??= []).Add(UnlinkLocked(request));
                removed = true;
            }
        }

        if (removed)
        {
            AdmitWaitingLocked();
        }
    }

    /// <summary>The soonest queue deadline of a request still queued, or <see cref="Timestamps.Never"/>.</summary>
    public long NextDeadlineLocked()
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        while (_deadlines.TryPeek(out Request<TIn, TOut>? request, out long deadline))
        {
            if (IsLive(request, deadline))
            {
                return deadline;
            }

            _deadlines.Dequeue();
        }

        return Timestamps.Never;
    }

    /// <summary>Shutdown: the items of callers still waiting for space never entered the queue and are removed, into
    /// <paramref name="into"/>; admitted items stay queued, to be drained.</summary>
    public void RemoveAllWaitingLocked(List<Removal<TIn, TOut>> into)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        foreach (ref Lane lane in _lanes.AsSpan())
        {
            Request<TIn, TOut>? request = lane.FirstWaiting;
            while (request is not null)
            {
                Request<TIn, TOut>? next = request.Next;
                if (request.Admitted == 0)
                {
                    into.Add(UnlinkLocked(request));
                }
                else
                {
                    // Partly admitted: its admitted items are drained, the rest are dropped.
                    int dropped = request.Unadmitted;
                    request.End -= dropped;
                    lane.WaitingItems -= dropped;
                    _waitingItems -= dropped;
                    into.Add(new Removal<TIn, TOut>(request, request.End, dropped, Unlinked: false));
                }

                request = next;
            }

            lane.FirstWaiting = null;
        }
    }

    /// <summary>Removes every request (abort), into <paramref name="into"/>.</summary>
    public void RemoveAllLocked(List<Removal<TIn, TOut>> into)
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        foreach (ref Lane lane in _lanes.AsSpan())
        {
            while (lane.List.Head is { } request)
            {
                into.Add(UnlinkLocked(request));
            }
        }

        _deadlines.Clear();
        _liveDeadlines = 0;
    }

    private Removal<TIn, TOut> UnlinkLocked(Request<TIn, TOut> request)
    {
        ref Lane lane = ref _lanes[request.Lane];
        if (lane.FirstWaiting == request)
        {
            lane.FirstWaiting = request.Next;
        }

        int unadmitted = request.Unadmitted;
        lane.List.Remove(request);
        lane.Items -= request.Admitted;
        _queuedItems -= request.Admitted;
        lane.WaitingItems -= unadmitted;
        _waitingItems -= unadmitted;
        var removal = new Removal<TIn, TOut>(request, request.NextIndex, request.Remaining, Unlinked: true);
        request.Admitted = 0;
        request.NextIndex = request.End;
        // A multi-item call with parts in batches is still running; anything else is done with the queue for good.
        request.MoveTo(request.IsMulti && removal.Start > 0 ? RequestState.InBatch : RequestState.Completed);
        if (request.Deadline != Timestamps.Never)
        {
            _liveDeadlines--;
        }

        return removal;
    }

    private static bool IsLive(Request<TIn, TOut> request, long deadline) =>
        request.State is RequestState.Queued or RequestState.WaitingForSpace && request.Deadline == deadline;

    private void TrackDeadlineLocked(Request<TIn, TOut> request)
    {
        _deadlines.Enqueue(request, request.Deadline);
        _liveDeadlines++;
        if (_deadlines.Count > 64 + 2 * _liveDeadlines)
        {
            // Stale entries (requests dispatched before their deadline) outnumber the live ones: keep the live ones.
            foreach ((Request<TIn, TOut> Element, long Priority) entry in _deadlines.UnorderedItems)
            {
                if (IsLive(entry.Element, entry.Priority))
                {
                    _rebuild.Add(entry);
                }
            }

            _deadlines.Clear();
            _deadlines.EnqueueRange(_rebuild);
            _rebuild.Clear();
        }
    }

    [Conditional("DEBUG")]
    public void AssertInvariants()
    {
        Debug.Assert(Sync.IsHeldByCurrentThread);
        Debug.Assert(_queuedItems >= 0 && _queuedItems <= Capacity, $"queued {_queuedItems} outside 0..{Capacity}");
        Debug.Assert(_waitingItems == 0 || _queuedItems == Capacity, "callers wait for space while the queue has room");
        int items = 0, waiting = 0;
        foreach (ref Lane lane in _lanes.AsSpan())
        {
            Debug.Assert(lane.Items >= 0 && lane.WaitingItems >= 0);
            Debug.Assert((lane.List.Count == 0) == (lane.List.Head is null));
            Debug.Assert(lane.Items == 0 || lane.List.Head!.Admitted > 0, "a lane's admitted items are not its prefix");
            Debug.Assert(lane.List.Head is null || lane.List.Head.State is RequestState.Queued or RequestState.WaitingForSpace);
            Debug.Assert((lane.WaitingItems == 0) == (lane.FirstWaiting is null), "waiting items without a first waiter");
            items += lane.Items;
            waiting += lane.WaitingItems;
        }

        Debug.Assert(items == _queuedItems && waiting == _waitingItems, "lane counts do not add up");
        Debug.Assert(_liveDeadlines >= 0);
    }

    private struct Lane
    {
        public RequestList<TIn, TOut> List;
        public int Items;
        public int WaitingItems;
        public Request<TIn, TOut>? FirstWaiting;
    }
}
