namespace Batching;

/// <summary>
/// Coalesces concurrent single-item calls into batches for a batch handler and hands every caller
/// the output computed for its own input.
/// </summary>
/// <typeparam name="TIn">The type of one input item.</typeparam>
/// <typeparam name="TOut">The type of one output item.</typeparam>
/// <remarks>
/// Every call completes exactly once: with its output, with an exception, or as cancelled.
/// Implementations are thread-safe. Dispose the processor to drain queued items and stop it.
/// </remarks>
public interface IBatchProcessor<TIn, TOut> : IAsyncDisposable
{
    /// <summary>Queues <paramref name="input"/> for the next batch and returns its output once the batch has run.</summary>
    /// <param name="input">The item to process.</param>
    /// <param name="cancellationToken">
    /// Cancels this item only. A queued item is removed before it reaches the handler; an item whose batch is
    /// already running releases its caller at once and its output is dropped.
    /// </param>
    /// <returns>The output the handler wrote for <paramref name="input"/>. The <see cref="ValueTask{TResult}"/> is backed by
    /// a pooled, consume-once source: await it exactly once (or call <c>AsTask()</c> once). Awaiting it twice, reading
    /// its result before it completed, or <c>AsTask()</c> after an await throws <see cref="InvalidOperationException"/>
    /// to that caller only; it never affects another call.</returns>
    /// <exception cref="BatchQueueFullException">The queue is full and <see cref="BatchingOptions.QueueFullMode"/> is <see cref="QueueFullMode.Reject"/>.</exception>
    /// <exception cref="BatchExecutionException">The handler failed for the batch carrying this item, or returned without writing its output.</exception>
    /// <exception cref="TimeoutException">The batch carrying this item ran past <see cref="BatchingOptions.ExecutionTimeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the output was ready.</exception>
    /// <exception cref="ObjectDisposedException">The processor was disposed before the item could run, or stopped because
    /// its dispatcher failed (the message names the cause).</exception>
    /// <exception cref="InvalidOperationException">Called from inside this processor's own batch handler, whose slot
    /// the call would wait for.</exception>
    ValueTask<TOut> ProcessAsync(TIn input, CancellationToken cancellationToken = default);
}
