using System.Diagnostics;
using Batching.Internal.Timing;

namespace Batching.Internal.Execution;

/// <summary>
/// Watches one batch while it resumes its callers inline, from the shared precise thread, and queues a helper
/// resumer when a continuation blocks. One per batch object; also the helper's work item.
/// </summary>
internal sealed class ResumeWatch<TIn, TOut>(Batch<TIn, TOut> batch) : IDeadlineTarget, IThreadPoolWorkItem
{
    /// <summary>How often a resumption is looked at: a continuation that blocks delays its siblings by about one period
    /// (the shared thread waits in whole milliseconds, so 1 to 2 ms).</summary>
    public static readonly TimeSpan Period = TimeSpan.FromMilliseconds(1);

    private static readonly long s_periodTicks = (long)(Period.TotalSeconds * Stopwatch.Frequency);

    private int _generation;

    /// <summary>Starts watching the current use of the batch (its generation); replaces the watch of an earlier use.</summary>
    /// <param name="generation">The use to watch.</param>
    /// <param name="now">A <see cref="Stopwatch"/> timestamp of about now.</param>
    public void Start(int generation, long now)
    {
        Volatile.Write(ref _generation, generation);
        PreciseTimerThread.Schedule(this, now + s_periodTicks);
    }

    void IDeadlineTarget.OnDeadline()
    {
        if (batch.CheckResumeProgress(Volatile.Read(ref _generation)))
        {
            PreciseTimerThread.Schedule(this, Stopwatch.GetTimestamp() + s_periodTicks);
        }
    }

    /// <summary>A helper resumer, queued by <see cref="Batch{TIn, TOut}.CheckResumeProgress"/>.</summary>
    void IThreadPoolWorkItem.Execute() => batch.RunHelper();
}
