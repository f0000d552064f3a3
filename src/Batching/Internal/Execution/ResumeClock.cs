namespace Batching.Internal.Execution;

/// <summary>
/// A clock reading shared by the callers a batch resumes inline on this thread: most of them call
/// <c>ProcessAsync</c> again at once, and reading the clock for each arrival was a sixth of the work of a request.
/// </summary>
/// <remarks>The resume loop reads the clock before every <see cref="RefreshEvery"/>-th caller; an arrival stamped from
/// it is earlier than the true one by at most the time those few continuations ran, so an item's age (and MaxDelay)
/// can only be overstated, dispatching it a little early, never late.</remarks>
internal static class ResumeClock
{
    public const int RefreshEvery = 8;

    [ThreadStatic]
    private static object? t_owner;

    [ThreadStatic]
    private static long t_timestamp;

    /// <summary>The cached reading, when this thread is resuming callers of <paramref name="owner"/>.</summary>
    public static bool TryGet(object owner, out long timestamp)
    {
        timestamp = t_timestamp;
        return ReferenceEquals(t_owner, owner);
    }

    /// <summary>Starts caching for <paramref name="owner"/>; returns what to hand back to <see cref="Exit"/>.</summary>
    public static (object? Owner, long Timestamp) Enter(object owner, long timestamp)
    {
        (object?, long) previous = (t_owner, t_timestamp);
        t_owner = owner;
        t_timestamp = timestamp;
        return previous;
    }

    public static void Refresh(long timestamp) => t_timestamp = timestamp;

    /// <summary>Restores what a resume loop further up this thread's stack (of another processor) had cached.</summary>
    public static void Exit((object? Owner, long Timestamp) previous)
    {
        t_owner = previous.Owner;
        t_timestamp = previous.Timestamp;
    }
}
