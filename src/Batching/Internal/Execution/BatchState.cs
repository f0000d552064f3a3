namespace Batching.Internal.Execution;

/// <summary>
/// Where a batch object is in one use. Transitions are named by intent:
/// <c>Start</c> (Idle → Running, takes a slot), <c>Complete</c> (Running → Completing, the handler returned; frees the
/// slot), <c>TimeOut</c> (Running → TimedOut, ExecutionTimeout passed; frees the slot and fails the callers while the
/// handler may still run), <c>Abandon</c> (Running → Abandoned, shutdown gave up; the same for disposal) and
/// <c>Retire</c> (back to Idle once the handler has returned and every caller was resumed).
/// </summary>
/// <remarks>Start and every transition out of Running happen under the processor's lock, together with the change to
/// its running set: membership in that set is the slot, so a slot is freed exactly once.</remarks>
internal enum BatchState
{
    Idle = 0,
    Running = 1,
    Completing = 2,
    TimedOut = 3,
    Abandoned = 4,
}
