using System.Diagnostics;

namespace Batching.Internal.Timing;

/// <summary>Something the <see cref="PreciseTimerThread"/> wakes when its deadline passes.</summary>
internal interface IDeadlineTarget
{
    /// <summary>Runs on the shared thread: must be quick, must not block, must not take a processor's lock and must
    /// never run user code. Implementations only signal (a compare-and-swap and a thread-pool work item).</summary>
    void OnDeadline();
}

/// <summary>
/// Wakes deadline targets with about a millisecond of precision on the system clock, for every processor in the process.
/// </summary>
/// <remarks>
/// <para>.NET's timers run on the kernel's coarse clock, which ticks every 1 to 4 ms on Linux and about 15.6 ms on
/// Windows, so a 1 ms MaxDelay on an <see cref="ITimer"/> could wait 4 ms or more. One background thread per process
/// serves every processor instead: it sleeps on a wait handle until the earliest deadline (timed waits use the precise
/// monotonic clock) and then signals the targets that are due, and it sleeps indefinitely while nothing is pending.</para>
/// <para>Because one thread serves every processor, a target only signals: the policy code, locks and handlers of a
/// processor run on that processor's own dispatcher, so one processor's slow policy cannot delay another's deadlines.
/// The same thread watches callers being resumed inline (see <c>ResumeWatch</c>) for a continuation that blocks.</para>
/// </remarks>
internal static class PreciseTimerThread
{
    private static readonly Lock s_lock = new();
    private static readonly Dictionary<IDeadlineTarget, long> s_due = [];
    private static readonly AutoResetEvent s_changed = new(false);
    private static Thread? s_thread;
    private static long s_earliest = long.MaxValue;

    /// <summary>Wakes <paramref name="target"/> at <paramref name="dueTimestamp"/> (a <see cref="Stopwatch"/> timestamp), replacing its earlier deadline.</summary>
    public static void Schedule(IDeadlineTarget target, long dueTimestamp)
    {
        bool sooner;
        lock (s_lock)
        {
            s_due[target] = dueTimestamp;
            sooner = dueTimestamp < s_earliest;
            if (sooner)
            {
                s_earliest = dueTimestamp;
            }

            if (s_thread is null)
            {
                // UnsafeStart: the thread must not capture the ExecutionContext of whoever scheduled first.
                s_thread = new Thread(Run) { IsBackground = true, Name = "Batching deadlines" };
                s_thread.UnsafeStart();
            }
        }

        if (sooner)
        {
            s_changed.Set();
        }
    }

    public static void Cancel(IDeadlineTarget target)
    {
        lock (s_lock)
        {
            s_due.Remove(target);
        }
    }

    private static void Run()
    {
        var due = new List<(long At, IDeadlineTarget Target)>();
        while (true)
        {
            long now = Stopwatch.GetTimestamp();
            long earliest = long.MaxValue;
            lock (s_lock)
            {
                foreach ((IDeadlineTarget target, long at) in s_due)
                {
                    if (at <= now)
                    {
                        due.Add((at, target));
                    }
                    else if (at < earliest)
                    {
                        earliest = at;
                    }
                }

                foreach ((_, IDeadlineTarget target) in due)
                {
                    s_due.Remove(target);
                }

                s_earliest = earliest;
            }

            // Earliest first, even when a late wake-up finds several due.
            due.Sort(static (a, b) => a.At.CompareTo(b.At));
            foreach ((_, IDeadlineTarget target) in due)
            {
                try
                {
                    target.OnDeadline();
                }
                catch (Exception ex)
                {
                    // A target's bug must not stop deadlines for every processor in the process.
                    Debug.Fail($"A deadline target threw: {ex}");
                }
            }

            if (due.Count > 0)
            {
                due.Clear();
                continue;
            }

            if (earliest == long.MaxValue)
            {
                s_changed.WaitOne();
            }
            else
            {
                // Round up: waking a little late costs a fraction of a millisecond, waking early a wasted loop.
                double milliseconds = (earliest - now) * 1000.0 / Stopwatch.Frequency;
                s_changed.WaitOne((int)Math.Min(int.MaxValue, Math.Ceiling(milliseconds)));
            }
        }
    }
}
