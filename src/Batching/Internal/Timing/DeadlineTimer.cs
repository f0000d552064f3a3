namespace Batching.Internal.Timing;

/// <summary>
/// A one-shot timer for absolute timestamps of one <see cref="TimeProvider"/>: the one deadline abstraction of the
/// engine (the dispatcher's wake-ups, execution timeouts, the shutdown wait). Which implementation a user gets is
/// chosen once, when it is built (as OpenTelemetry's batch processor picks its worker once): the precise shared thread
/// for the system clock, the provider's own timers for any other clock (fake time in tests).
/// </summary>
/// <remarks>
/// <para>Armed with <see cref="ArmNoLaterThan"/>: a pending deadline that comes sooner is kept (it fires early and the
/// owner, deciding again, arms for what it still needs), so arming is cheap when it is already pending. The timer
/// forgets its deadline just before the callback runs, so an arming that races with a firing is never lost.</para>
/// <para>The callback must be quick and must never block or call user code: it only signals. Any deadline works,
/// however far away: .NET timers accept at most about 49.7 days, so a longer wait is armed in steps.</para>
/// </remarks>
internal abstract class DeadlineTimer : IDisposable
{
    private readonly Lock _lock = new();
    private readonly Action _callback;
    private long _due = Timestamps.Never;
    private bool _disposed;

    private DeadlineTimer(Action callback) => _callback = callback;

    /// <summary>A timer that fires <paramref name="callback"/> at the deadlines given to <see cref="ArmNoLaterThan"/>.</summary>
    /// <param name="time">The clock deadlines are read on.</param>
    /// <param name="callback">Invoked on a timer or pool thread; must only signal.</param>
    /// <param name="precise">Use the shared precise thread when <paramref name="time"/> is the system clock
    /// (about a millisecond of precision instead of the kernel's 1 to 15.6 ms timer tick).</param>
    public static DeadlineTimer Create(TimeProvider time, Action callback, bool precise) =>
        precise && time == TimeProvider.System ? new PreciseDeadlineTimer(callback) : new ProviderDeadlineTimer(time, callback);

    /// <summary>Makes the callback fire at <paramref name="dueTimestamp"/> or sooner; <see cref="Timestamps.Never"/> arms nothing.</summary>
    public void ArmNoLaterThan(long dueTimestamp)
    {
        if (dueTimestamp == Timestamps.Never)
        {
            return;
        }

        lock (_lock)
        {
            if (_disposed || _due <= dueTimestamp)
            {
                return;
            }

            _due = dueTimestamp;
            ArmLocked(dueTimestamp);
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
        }

        DisposeCore();
    }

    /// <summary>Starts the underlying wait for <paramref name="dueTimestamp"/>, replacing the previous one.</summary>
    private protected abstract void ArmLocked(long dueTimestamp);

    private protected abstract void DisposeCore();

    /// <summary>The underlying wait ended at <paramref name="now"/>: fire if the deadline is reached, else wait for the rest.</summary>
    private protected void OnWaitEnded(long now)
    {
        lock (_lock)
        {
            if (_disposed || _due == Timestamps.Never)
            {
                return;
            }

            if (now < _due)
            {
                // One step of a long wait ended (or the provider fired early).
                ArmLocked(_due);
                return;
            }

            _due = Timestamps.Never;
        }

        _callback();
    }

    private sealed class PreciseDeadlineTimer(Action callback) : DeadlineTimer(callback), IDeadlineTarget
    {
        private protected override void ArmLocked(long dueTimestamp) => PreciseTimerThread.Schedule(this, dueTimestamp);

        void IDeadlineTarget.OnDeadline() => OnWaitEnded(System.Diagnostics.Stopwatch.GetTimestamp());

        private protected override void DisposeCore() => PreciseTimerThread.Cancel(this);
    }

    private sealed class ProviderDeadlineTimer : DeadlineTimer
    {
        /// <summary>The longest single wait handed to an <see cref="ITimer"/>; longer waits re-arm.</summary>
        private static readonly TimeSpan MaxStep = TimeSpan.FromDays(1);

        private readonly TimeProvider _time;
        private readonly ITimer _timer;

        public ProviderDeadlineTimer(TimeProvider time, Action callback)
            : base(callback)
        {
            _time = time;

            // Timers capture the ExecutionContext of whoever creates them, and may be created on a caller's thread (the
            // idle fast path) or a host's (construction): their callbacks must not run in, nor keep alive, that context.
            AsyncFlowControl? flow = ExecutionContext.IsFlowSuppressed() ? null : ExecutionContext.SuppressFlow();
            try
            {
                _timer = time.CreateTimer(static s => ((ProviderDeadlineTimer)s!).OnWaitEnded(((ProviderDeadlineTimer)s!)._time.GetTimestamp()),
                    this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }
            finally
            {
                flow?.Undo();
            }
        }

        private protected override void ArmLocked(long dueTimestamp)
        {
            TimeSpan wait = Timestamps.Until(_time.GetTimestamp(), dueTimestamp, _time.TimestampFrequency);
            _timer.Change(wait > MaxStep ? MaxStep : wait, Timeout.InfiniteTimeSpan);
        }

        private protected override void DisposeCore() => _timer.Dispose();
    }
}
