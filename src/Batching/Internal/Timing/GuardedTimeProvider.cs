namespace Batching.Internal.Timing;

/// <summary>
/// A caller-supplied clock, guarded: if its <see cref="GetTimestamp"/>, <see cref="CreateTimer"/> or its timers'
/// <c>Change</c> or <c>Dispose</c> throw (a faulty custom provider), the processor is told once and the call returns
/// something harmless (the last good reading, a timer that never fires), so that no lock body, timer callback or batch
/// thread of the engine ever sees the exception. The processor then stops as if its dispatcher had failed, and says so in its health.
/// </summary>
/// <remarks>Not used for <see cref="TimeProvider.System"/>, which never throws.</remarks>
internal sealed class GuardedTimeProvider(TimeProvider inner, Action<Exception> onFault) : TimeProvider
{
    private long _lastGood = SafeFirstReading(inner);
    private int _faulted;

    public TimeProvider Inner => inner;

    public override long TimestampFrequency => inner.TimestampFrequency;

    public override TimeZoneInfo LocalTimeZone => inner.LocalTimeZone;

    public override DateTimeOffset GetUtcNow() => inner.GetUtcNow();

    public override long GetTimestamp()
    {
        try
        {
            long now = inner.GetTimestamp();
            Volatile.Write(ref _lastGood, now);
            return now;
        }
        catch (Exception ex)
        {
            Fault(ex);
            return Volatile.Read(ref _lastGood);
        }
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        try
        {
            return new GuardedTimer(inner.CreateTimer(callback, state, dueTime, period), this);
        }
        catch (Exception ex)
        {
            Fault(ex);
            return new GuardedTimer(null, this); // never fires; the processor is stopping anyway
        }
    }

    private void Fault(Exception error)
    {
        if (Interlocked.Exchange(ref _faulted, 1) == 0)
        {
            // Reported from the pool: this may be inside one of the processor's lock bodies.
            ThreadPool.UnsafeQueueUserWorkItem(static s => s.Fault(s.Error), (Fault: onFault, Error: error), preferLocal: false);
        }
    }

    /// <summary>The provider's timer, with Change and Dispose guarded the same way.</summary>
    private sealed class GuardedTimer(ITimer? inner, GuardedTimeProvider owner) : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            try
            {
                return inner?.Change(dueTime, period) ?? false;
            }
            catch (Exception ex)
            {
                owner.Fault(ex);
                return false;
            }
        }

        public void Dispose()
        {
            try
            {
                inner?.Dispose();
            }
            catch (Exception ex)
            {
                owner.Fault(ex);
            }
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                if (inner is not null)
                {
                    await inner.DisposeAsync().ConfigureAwait(false);
                }
            }
            catch (Exception ex)
            {
                owner.Fault(ex);
            }
        }
    }

    private static long SafeFirstReading(TimeProvider clock)
    {
        try
        {
            return clock.GetTimestamp();
        }
        catch (Exception)
        {
            return 0;
        }
    }
}
