namespace Batching.Internal.Timing;

/// <summary>Timestamp arithmetic on a <see cref="TimeProvider"/>'s scale that saturates instead of overflowing, so that
/// any timeout validation accepts (up to <see cref="Timeout.InfiniteTimeSpan"/> and <see cref="TimeSpan.MaxValue"/>) works.</summary>
internal static class Timestamps
{
    /// <summary>Stands for "never".</summary>
    public const long Never = long.MaxValue;

    /// <summary><paramref name="timestamp"/> plus <paramref name="span"/>; <see cref="Never"/> for an infinite or unrepresentably long span.</summary>
    public static long Add(long timestamp, TimeSpan span, long frequency)
    {
        if (span == Timeout.InfiniteTimeSpan)
        {
            return Never;
        }

        if (span <= TimeSpan.Zero)
        {
            return timestamp;
        }

        double ticks = span.TotalSeconds * frequency;
        return ticks >= Never - timestamp ? Never : timestamp + (long)Math.Ceiling(ticks);
    }

    /// <summary>Time from <paramref name="now"/> until <paramref name="due"/>: zero when it has passed, infinite for <see cref="Never"/>.</summary>
    public static TimeSpan Until(long now, long due, long frequency)
    {
        if (due == Never)
        {
            return Timeout.InfiniteTimeSpan;
        }

        return due <= now ? TimeSpan.Zero : TimeSpan.FromSeconds((due - now) / (double)frequency);
    }
}
