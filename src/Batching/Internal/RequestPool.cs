namespace Batching.Internal;

/// <summary>
/// Free requests of one processor. Renting happens under the processor's lock (every call takes it anyway to be
/// admitted), from a plain list; returning happens on whatever thread released the request last, onto a lock-free
/// stack that the renter takes whole when its list runs dry.
/// </summary>
/// <remarks>Push-only with a take-all exchange has no ABA hazard, and the renter's side costs no atomic operation in
/// the common case. Unbounded on purpose: it never holds more requests than callers once had outstanding at the same
/// time (like ArrayPool, it keeps the peak).</remarks>
internal sealed class RequestPool<TIn, TOut>
{
    private Request<TIn, TOut>? _free;
    private Request<TIn, TOut>? _returned;

    /// <summary>A free request, or null when the pool is empty. Requires the processor's lock.</summary>
    public Request<TIn, TOut>? RentLocked()
    {
        Request<TIn, TOut>? request = _free ?? Interlocked.Exchange(ref _returned, null);
        if (request is not null)
        {
            _free = request.NextFree;
            request.NextFree = null;
        }

        return request;
    }

    /// <summary>Returns a request nobody refers to any more; any thread.</summary>
    public void Return(Request<TIn, TOut> request)
    {
        Request<TIn, TOut>? head;
        do
        {
            head = Volatile.Read(ref _returned);
            request.NextFree = head;
        }
        while (Interlocked.CompareExchange(ref _returned, request, head) != head);
    }
}
