namespace Batching;

/// <summary>What <see cref="IBatchProcessor{TIn, TOut}.ProcessAsync(TIn, CancellationToken)"/> does when the queue holds <see cref="BatchingOptions.QueueCapacity"/> items.</summary>
public enum QueueFullMode
{
    /// <summary>Wait asynchronously, in arrival order, until there is space; the wait is cancellable through the call's token.</summary>
    Wait = 0,

    /// <summary>Fail the call at once with <see cref="BatchQueueFullException"/>.</summary>
    Reject = 1,
}
