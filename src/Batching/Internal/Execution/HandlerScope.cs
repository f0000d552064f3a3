namespace Batching.Internal.Execution;

/// <summary>
/// Recognises a call from inside a handler back into its own processor. Such a call would wait for a slot its own
/// batch holds; it is refused at once instead of hanging the handler (and, with it, every later caller) until
/// ExecutionTimeout. Calls from work the handler started in the background, made after its batch is done, are served.
/// </summary>
/// <remarks>
/// <para>Two markers, both exact. On the handler's own stack (its synchronous part), a thread-static names the
/// processor whose handler is being invoked: free. Once a processor's handler has been seen to complete
/// asynchronously, each batch use also runs its handler in an ExecutionContext of its own that carries a scope naming
/// that use (batch object and generation), so that the handler's continuations are recognised too, and background
/// work it started is not, once the use is over: one small allocation per batch, for asynchronous handlers only.</para>
/// </remarks>
internal sealed class HandlerScope
{
    private static readonly AsyncLocal<HandlerScope?> s_current = new();
    private static readonly ContextCallback s_capture = static state =>
    {
        var scope = (HandlerScope)state!;
        s_current.Value = scope;
        scope._context = ExecutionContext.Capture();
    };

    [ThreadStatic]
    private static object? t_invoking;

    // Set once any processor has given a use its own scope: until then no call needs the AsyncLocal lookup.
    private static volatile bool s_inUse;

    private readonly object _processor;
    private readonly Func<int, bool> _isRunning;
    private readonly int _generation;
    private ExecutionContext? _context;

    private HandlerScope(object processor, Func<int, bool> isRunning, int generation)
    {
        _processor = processor;
        _isRunning = isRunning;
        _generation = generation;
    }

    /// <summary>Whether a call to <paramref name="processor"/> from here would wait on a handler of that processor that is
    /// running right now and made the call.</summary>
    public static bool Refuses(object processor) =>
        ReferenceEquals(t_invoking, processor) ||
        (s_inUse && s_current.Value is { } scope && ReferenceEquals(scope._processor, processor) && scope._isRunning(scope._generation));

    /// <summary>The clean context plus a scope naming one use of a batch object.</summary>
    public static ExecutionContext ForUse(object processor, Func<int, bool> isRunning, int generation)
    {
        s_inUse = true;
        var scope = new HandlerScope(processor, isRunning, generation);
        ExecutionContext.Run(CleanContext.Instance, s_capture, scope);
        return scope._context!;
    }

    /// <summary>Marks this thread as inside a handler of <paramref name="processor"/>; returns what to restore.</summary>
    public static object? EnterInvocation(object processor)
    {
        object? previous = t_invoking;
        t_invoking = processor;
        return previous;
    }

    public static void ExitInvocation(object? previous) => t_invoking = previous;
}
