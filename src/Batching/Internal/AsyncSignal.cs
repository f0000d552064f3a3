using System.Threading.Tasks.Sources;

namespace Batching.Internal;

/// <summary>
/// An allocation-free auto-reset event with one waiter (the dispatcher) and any number of signallers.
/// A signal that arrives while nobody waits is remembered, so a wake-up between "decide to wait" and
/// "start waiting" is never lost.
/// </summary>
/// <remarks>
/// The waiter is resumed from the thread pool's global (FIFO) queue, never inline and never from the signalling
/// thread's local queue. Signallers are callers whose own continuations sit in that local queue, which the owning
/// thread drains last-in first-out: resumed there, the dispatcher would run after the first returning caller and
/// before the others, and form a batch of one each time. From the global queue it runs after the callers that are
/// already runnable have re-queued their next items, so batches grow.
/// </remarks>
internal sealed class AsyncSignal : IValueTaskSource, IThreadPoolWorkItem
{
    private const int Idle = 0, Signaled = 1, Waiting = 2;

    private ManualResetValueTaskSourceCore<bool> _core;
    private int _state;

    public AsyncSignal()
    {
        // Completion happens in Execute, already on a pool thread of our choosing, so continue inline there.
        _core.RunContinuationsAsynchronously = false;
    }

    public ValueTask WaitAsync()
    {
        if (Interlocked.CompareExchange(ref _state, Idle, Signaled) == Signaled)
        {
            return ValueTask.CompletedTask;
        }

        _core.Reset();
        if (Interlocked.CompareExchange(ref _state, Waiting, Idle) != Idle)
        {
            // A signal slipped in between the two exchanges; consume it.
            Volatile.Write(ref _state, Idle);
            return ValueTask.CompletedTask;
        }

        return new ValueTask(this, _core.Version);
    }

    public void Set()
    {
        while (true)
        {
            int state = Volatile.Read(ref _state);
            if (state == Signaled)
            {
                return;
            }

            if (state == Idle)
            {
                if (Interlocked.CompareExchange(ref _state, Signaled, Idle) == Idle)
                {
                    return;
                }
            }
            else if (Interlocked.CompareExchange(ref _state, Idle, Waiting) == Waiting)
            {
                ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
                return;
            }
        }
    }

    void IThreadPoolWorkItem.Execute() => _core.SetResult(true);

    void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
