namespace Batching.Internal.Execution;

/// <summary>
/// Marks the ExecutionContext a batch's handler runs in, so that a call from inside a handler back into its own
/// processor is recognised. Such a call would wait for a slot its own batch holds; it is refused at once instead of
/// hanging the handler (and, with it, every later caller) until ExecutionTimeout.
/// </summary>
internal sealed class HandlerScope(object processor, Func<bool> holdsSlot)
{
    private static readonly AsyncLocal<HandlerScope?> s_current = new();

    public static HandlerScope? Current => s_current.Value;

    /// <summary>Whether a call to <paramref name="processor"/> from this scope would wait on this very handler.</summary>
    public bool Blocks(object processor) => ReferenceEquals(processor, Owner) && holdsSlot();

    private object Owner { get; } = processor;

    /// <summary>The clean context plus this marker, built once per batch object.</summary>
    public ExecutionContext CreateContext()
    {
        ExecutionContext? context = null;
        ExecutionContext.Run(CleanContext.Instance, _ =>
        {
            s_current.Value = this;
            context = ExecutionContext.Capture();
        }, null);
        return context!;
    }
}
