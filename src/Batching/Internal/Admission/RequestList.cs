using System.Diagnostics;

namespace Batching.Internal.Admission;

/// <summary>An intrusive FIFO of requests: O(1) append, pop and unlink, no allocation. Not thread-safe: the processor's lock guards it.</summary>
/// <remarks>Intrusive links make cancelling a queued item an O(1) unlink, and leave room for lanes (one list each).</remarks>
internal struct RequestList<TIn, TOut>
{
    private Request<TIn, TOut>? _head;
    private Request<TIn, TOut>? _tail;

    /// <summary>Requests in the list; read without the lock by gauges, so written as a whole int.</summary>
    public int Count { get; private set; }

    public readonly Request<TIn, TOut>? Head => _head;

    public void AddLast(Request<TIn, TOut> request)
    {
        Debug.Assert(request.Next is null && request.Previous is null);
        request.Previous = _tail;
        if (_tail is null)
        {
            _head = request;
        }
        else
        {
            _tail.Next = request;
        }

        _tail = request;
        Count++;
    }

    public Request<TIn, TOut>? RemoveFirst()
    {
        Request<TIn, TOut>? first = _head;
        if (first is not null)
        {
            Remove(first);
        }

        return first;
    }

    public void Remove(Request<TIn, TOut> request)
    {
        if (request.Previous is null)
        {
            Debug.Assert(_head == request);
            _head = request.Next;
        }
        else
        {
            request.Previous.Next = request.Next;
        }

        if (request.Next is null)
        {
            Debug.Assert(_tail == request);
            _tail = request.Previous;
        }
        else
        {
            request.Next.Previous = request.Previous;
        }

        request.Next = request.Previous = null;
        Count--;
    }
}
