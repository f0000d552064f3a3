using System.Diagnostics;

namespace Batching.Internal.Timing;

/// <summary>
/// A one-shot timer armed for an absolute timestamp of one <see cref="TimeProvider"/>: the one deadline abstraction
/// of the engine. Which implementation a processor uses is chosen once, when it is built (as OpenTelemetry's batch
/// processor picks its worker once): the precise shared thread for the system clock, the provider's own timers for any
/// other clock (fake time in tests).
/// </summary>
/// <remarks>
/// The callback must be quick and must never block or call user code: it only signals. Any deadline works, however far
/// away: .NET timers accept at most about 49.7 days, so a longer wait is armed in steps and re-armed when a step ends.
/// </remarks>
internal abstract class DeadlineTimer : IDisposable
{
    /// <summary>The longest single step handed to an <see cref="ITimer"/>; longer waits re-arm.</summary>
    internal static readonly TimeSpan MaxStep = TimeSpan.FromDays(1);

    /// <summary>A timer that fires <paramref name="callback"/> at the deadlines given to <see cref="ArmAt"/>.</summary>
    /// <param name="time">The clock deadlines are read on.</param>
    /// <param name="callback">Invoked on a timer or pool thread; must only signal.</param>
    /// <param name="precise">Use the shared precise thread when <paramref name="time"/> is the system clock
    /// (about a millisecond of precision instead of the kernel's 1 to 15.6 ms timer tick).</param>
    public static DeadlineTimer Create(TimeProvider time, Action callback, bool precise) =>
        precise && time == TimeProvider.System ? new PreciseDeadlineTimer(callback) : new ProviderDeadlineTimer(time, callback);

    /// <summary>Fires the callback once at (or just after) <paramref name="dueTimestamp"/>, replacing any earlier arming.
    /// <see cref="Timestamps.Never"/> disarms.</summary>
    public abstract void ArmAt(long dueTimestamp);

    public abstract void Dispose();

    private sealed class PreciseDeadlineTimer(Action callback) : DeadlineTimer, IDeadlineTarget
    {
        public override void ArmAt(long dueTimestamp)
        {
            if (dueTimestamp == Timestamps.Never)
            {
                PreciseTimerThread.Cancel(this);
            }
            else
            {
                PreciseTimerThread.Schedule(this, dueTimestamp);
            }
        }

        void IDeadlineTarget.OnDeadline() => callback();

        public override void Dispose() => PreciseTimerThread.Cancel(this);
    }

    private sealed class ProviderDeadlineTimer : DeadlineTimer
    {
        private readonly TimeProvider _time;
        private readonly Action _callback;
        private readonly ITimer _timer;
        private readonly Lock _lock = new();
        private long _due = Timestamps.Never;
        private bool _disposed;

        public ProviderDeadlineTimer(TimeProvider time, Action callback)
        {
            _time = time;
            _callback = callback;
            // Timers capture the ExecutionContext of whoever creates them, and may be created on a caller's thread (the
            // idle fast path) or a host's (construction): their callbacks must not run in, nor keep alive, that context.
            AsyncFlowControl? flow = ExecutionContext.IsFlowSuppressed() ? null : ExecutionContext.SuppressFlow();
            try
            {
                _timer = time.CreateTimer(static s => ((ProviderDeadlineTimer)s!).OnFired(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }
            finally
            {
                flow?.Undo();
            }
        }

        public override void ArmAt(long dueTimestamp)
        {
            lock (_lock)
            {
                if (_disposed)
                {
                    return;
                }

                _due = dueTimestamp;
                ChangeLocked(_time.GetTimestamp());
            }
        }

        private void ChangeLocked(long now)
        {
            Debug.Assert(_lock.IsHeldByCurrentThread);
            TimeSpan wait = Timestamps.Until(now, _due, _time.TimestampFrequency);
            if (wait != Timeout.InfiniteTimeSpan && wait > MaxStep)
            {
                wait = MaxStep;
            }

            _timer.Change(wait, Timeout.InfiniteTimeSpan);
        }

        private void OnFired()
        {
            lock (_lock)
            {
                if (_disposed || _due == Timestamps.Never)
                {
                    return;
                }

                long now = _time.GetTimestamp();
                if (now < _due)
                {
                    // One step of a long wait ended (or the provider fired early): wait for the rest.
                    ChangeLocked(now);
                    return;
                }

                _due = Timestamps.Never;
            }

            _callback();
        }

        public override void Dispose()
        {
            lock (_lock)
            {
                _disposed = true;
            }

            _timer.Dispose();
        }
    }
}
