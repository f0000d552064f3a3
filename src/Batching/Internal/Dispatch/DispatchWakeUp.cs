using System.Diagnostics;
using Batching.Internal.Timing;

namespace Batching.Internal.Dispatch;

/// <summary>
/// When a processor's dispatcher runs: the signal, the conditions it sleeps on, and its deadline timer.
/// </summary>
/// <remarks>
/// <para>The dispatcher is not a thread or a loop that waits: it is a thread-pool work item
/// that runs the processor's dispatch step until there is nothing to do, then goes idle. <see cref="Signal"/> schedules
/// it, or, if it is running, makes it run once more, so a wake-up between its last decision and going idle is never
/// lost. One state field: Idle, Scheduled, Running, RunningSignaled.</para>
/// <para>Before it goes idle the dispatcher records, under the processor's lock, what should wake it: a queue length
/// (<see cref="ArrivalWakesLocked"/>), a freed slot, or a deadline (<see cref="SleepLocked"/>). Producers signal only
/// when that condition is met, so a busy queue costs no wake-ups per item. The deadline timer and every other
/// signaller only call <see cref="Signal"/>: none of them takes the processor's lock or runs its policy.</para>
/// </remarks>
internal sealed class DispatchWakeUp : IThreadPoolWorkItem, IDisposable
{
    private const int Idle = 0, Scheduled = 1, Running = 2, RunningSignaled = 3;

    private readonly Action _dispatch;
    private readonly DeadlineTimer _timer;
    private int _state;

    // Guarded by the processor's lock.
    private int _wakeWhenQueued = 1;

    /// <param name="time">The processor's clock.</param>
    /// <param name="dispatch">Runs the dispatcher once it holds the role: decides under the lock until it sleeps, and
    /// ends the run with <see cref="EndRun"/> (repeating while that says so). Must not throw.</param>
    public DispatchWakeUp(TimeProvider time, Action dispatch)
    {
        _dispatch = dispatch;
        _timer = DeadlineTimer.Create(time, Signal, precise: true);
    }

    /// <summary>Neither running nor scheduled: the dispatcher sleeps on its conditions.</summary>
    public bool IsIdle => Volatile.Read(ref _state) == Idle;

    public void Signal()
    {
        while (true)
        {
            int state = Volatile.Read(ref _state);
            switch (state)
            {
                case Idle:
                    if (Interlocked.CompareExchange(ref _state, Scheduled, Idle) == Idle)
                    {
                        ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
                        return;
                    }

                    break;
                case Running:
                    if (Interlocked.CompareExchange(ref _state, RunningSignaled, Running) == Running)
                    {
                        return;
                    }

                    break;
                default:
                    return; // Scheduled or RunningSignaled: a run that will see the new state is coming.
            }
        }
    }

    void IThreadPoolWorkItem.Execute()
    {
        Volatile.Write(ref _state, Running);
        _dispatch();
    }

    /// <summary>Takes the dispatcher role on this thread if it is idle (not running, not scheduled).</summary>
    public bool TryBeginRun() => Interlocked.CompareExchange(ref _state, Running, Idle) == Idle;

    /// <summary>Ends a run: true when it went idle, false when it was signalled meanwhile and must run once more.</summary>
    public bool EndRun()
    {
        if (Interlocked.CompareExchange(ref _state, Idle, Running) == Running)
        {
            return true;
        }

        Volatile.Write(ref _state, Running); // signalled while running: run again
        return false;
    }

    /// <summary>An item arrived and the queue now holds <paramref name="queuedItems"/>: whether to wake the dispatcher.</summary>
    public bool ArrivalWakesLocked(int queuedItems)
    {
        if (queuedItems < _wakeWhenQueued)
        {
            return false;
        }

        _wakeWhenQueued = int.MaxValue; // one signal is enough until the dispatcher sets new conditions
        return true;
    }

    /// <summary>A slot was freed while the queue is empty: the next arrival wakes the dispatcher.</summary>
    public void WakeOnArrivalLocked() => _wakeWhenQueued = 1;

    /// <summary>The dispatcher goes idle: wake it when <paramref name="wakeWhenQueued"/> items are queued or at
    /// <paramref name="dueTimestamp"/>, whichever comes first (a freed slot and shutdown always signal).</summary>
    public void SleepLocked(int wakeWhenQueued, long dueTimestamp)
    {
        Debug.Assert(wakeWhenQueued >= 1);
        _wakeWhenQueued = wakeWhenQueued;
        _timer.ArmNoLaterThan(dueTimestamp); // a pending timer that fires sooner wakes us early, and we decide again
    }

    /// <summary>Makes the dispatcher run at <paramref name="dueTimestamp"/> or sooner whatever it sleeps on (a queued
    /// item's deadline, which must be honoured even while every slot is busy).</summary>
    public void WakeNoLaterThan(long dueTimestamp) => _timer.ArmNoLaterThan(dueTimestamp);

    public void Dispose() => _timer.Dispose();
}
