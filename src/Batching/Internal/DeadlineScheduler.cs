using System.Diagnostics;

namespace Batching.Internal;

/// <summary>Something the <see cref="DeadlineScheduler"/> wakes when its deadline passes.</summary>
internal interface IDeadlineTarget
{
    void OnDeadline();
}

/// <summary>
/// Wakes dispatchers at their MaxDelay deadlines with about a millisecond of precision on the system clock.
/// </summary>
/// <remarks>
/// .NET's timers run on the kernel's coarse clock, which ticks every 1 to 4 ms on Linux and about 15.6 ms on
/// Windows, so a 1 ms MaxDelay on an <see cref="ITimer"/> could wait 4 ms or more. One background thread per process
/// serves every processor instead: it sleeps on a wait handle until the earliest deadline (timed waits use the
/// precise monotonic clock) and then signals the processors that are due. It only wakes processors (a lock and a
/// flag), never runs user code, and it sleeps indefinitely while nothing is pending.
/// </remarks>
internal static class DeadlineScheduler
{
    private static readonly object s_lock = new();
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
                s_thread = new Thread(Run) { IsBackground = true, Name = "Batching deadlines" };
                s_thread.Start();
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
