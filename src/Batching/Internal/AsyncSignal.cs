using System.Threading.Tasks.Sources;

namespace Batching.Internal;

/// <summary>
/// An allocation-free auto-reset event with one waiter (the dispatcher) and any number of signallers.
/// A signal that arrives while nobody waits is remembered, so a wake-up between "decide to wait" and
/// "start waiting" is never lost.
/// </summary>
internal sealed class AsyncSignal : IValueTaskSource
{
    private const int Idle = 0, Signaled = 1, Waiting = 2;

    private ManualResetValueTaskSourceCore<bool> _core;
    private int _state;

    public AsyncSignal()
    {
        // The dispatcher must never run on a signaller's thread: that would be a caller's thread.
        _core.RunContinuationsAsynchronously = true;
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
                _core.SetResult(true);
                return;
            }
        }
    }

    void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
