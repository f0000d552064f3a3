namespace Batching.Internal.Timing;

/// <summary>
/// A caller-supplied clock, guarded: if its <see cref="GetTimestamp"/> throws (a faulty custom provider), the processor
/// is told once and the last good reading is returned, so that no lock body, timer callback or batch thread of the
/// engine ever sees the exception. The processor then stops as if its dispatcher had failed, and says so in its health.
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
            if (Interlocked.Exchange(ref _faulted, 1) == 0)
            {
                // Reported from the pool: this may be inside one of the processor's lock bodies.
                ThreadPool.UnsafeQueueUserWorkItem(static s => s.Fault(s.Error), (Fault: onFault, Error: ex), preferLocal: false);
            }

            return Volatile.Read(ref _lastGood);
        }
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        inner.CreateTimer(callback, state, dueTime, period);

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
