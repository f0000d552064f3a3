namespace Batching.Internal;

/// <summary>The empty <see cref="ExecutionContext"/>: no AsyncLocal values, no current activity.</summary>
/// <remarks>Handlers and completions run in it (or in a copy that adds only the handler marker), so that nothing of
/// whoever built the processor, nor of the caller that happened to trigger a batch, leaks into user code, and nothing a
/// handler writes survives into the next batch.</remarks>
internal static class CleanContext
{
    public static readonly ExecutionContext Instance = CaptureOnFreshThread();

    /// <summary>Runs <paramref name="callback"/> in the clean context, directly when the thread already is in it.</summary>
    public static void Run(ContextCallback callback, object? state)
    {
        if (ExecutionContext.Capture() == Instance)
        {
            callback(state);
        }
        else
        {
            ExecutionContext.Run(Instance, callback, state);
        }
    }

    private static ExecutionContext CaptureOnFreshThread()
    {
        // A thread started without flowing a context has none: Capture() returns the default context.
        ExecutionContext? captured = null;
        var thread = new Thread(() => captured = ExecutionContext.Capture()) { IsBackground = true, Name = "Batching context capture" };
        thread.UnsafeStart();
        thread.Join();
        return captured ?? throw new InvalidOperationException("Could not capture the default ExecutionContext.");
    }
}
