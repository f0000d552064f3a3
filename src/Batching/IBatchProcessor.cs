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

    /// <summary>Queues <paramref name="input"/> at the priority and with the queue timeout of <paramref name="options"/>,
    /// and returns its output once its batch has run.</summary>
    /// <param name="input">The item to process.</param>
    /// <param name="options">Its priority level and queue timeout.</param>
    /// <param name="cancellationToken">Cancels this item only, as for <see cref="ProcessAsync(TIn, CancellationToken)"/>.</param>
    /// <returns>The output, as for <see cref="ProcessAsync(TIn, CancellationToken)"/> (a consume-once <see cref="ValueTask{TResult}"/>).</returns>
    /// <exception cref="ArgumentException"><paramref name="options"/> has a priority outside the processor's levels or a
    /// negative timeout (other than infinite), or <paramref name="input"/> weighs more than <see cref="BatchingOptions.MaxBatchWeight"/>;
    /// nothing was queued.</exception>
    /// <exception cref="TimeoutException">The item was still queued when <see cref="RequestOptions.Timeout"/> expired; it never
    /// reached the handler. (Also, as for every call, when its batch ran past <see cref="BatchingOptions.ExecutionTimeout"/>.)</exception>
    ValueTask<TOut> ProcessAsync(TIn input, RequestOptions options, CancellationToken cancellationToken = default);

    /// <summary>
    /// Processes several items in one call: <c>outputs[i]</c> receives the output for <c>inputs[i]</c>. The items count
    /// one each toward <see cref="BatchingOptions.MaxBatchSize"/>, <see cref="BatchingOptions.QueueCapacity"/> and the
    /// flush policy; a call larger than the room left in a batch is split across consecutive batches, in order. The task
    /// completes once, after every item has finished.
    /// </summary>
    /// <param name="inputs">The items. Read while they are queued; the call copies each into its batch.</param>
    /// <param name="outputs">Where the outputs go; exactly as long as <paramref name="inputs"/>. Written only until the
    /// returned task completes (a cancelled call's buffer is never written after it was released).</param>
    /// <param name="options">The priority level and queue timeout of every item.</param>
    /// <param name="cancellationToken">Cancels the whole call: items still queued are removed, and the call is released at once.</param>
    /// <returns>A consume-once <see cref="ValueTask"/>, like the one <see cref="ProcessAsync(TIn, CancellationToken)"/> returns.</returns>
    /// <exception cref="ArgumentException"><paramref name="outputs"/> is not as long as <paramref name="inputs"/>, the options
    /// are out of range, or an input weighs more than <see cref="BatchingOptions.MaxBatchWeight"/>; nothing was queued.</exception>
    /// <exception cref="BatchQueueFullException">The items do not fit in the queue and <see cref="BatchingOptions.QueueFullMode"/>
    /// is <see cref="QueueFullMode.Reject"/>: the whole call is rejected, none of it queued. (In <see cref="QueueFullMode.Wait"/>
    /// a call larger than the room left, or than the whole queue, is admitted in parts as room frees.)</exception>
    /// <exception cref="BatchExecutionException">Some items failed (the handler threw for their batch, left their output
    /// unwritten, their batch timed out, or they expired in the queue while others ran): <see cref="BatchExecutionException.ItemFailures"/>
    /// says which input indexes failed and why. The outputs of the items that succeeded are written.</exception>
    /// <exception cref="TimeoutException">Every item failed for one timeout: all were still queued when <see cref="RequestOptions.Timeout"/>
    /// expired, or all ran in one batch that passed <see cref="BatchingOptions.ExecutionTimeout"/>. (Items failed by several
    /// timeouts or causes give <see cref="BatchExecutionException"/>; the same holds for <see cref="ObjectDisposedException"/> at shutdown.)</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before every output was ready.</exception>
    /// <exception cref="ObjectDisposedException">The processor was disposed before any item could run.</exception>
    ValueTask ProcessManyAsync(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, RequestOptions options = default, CancellationToken cancellationToken = default);

    /// <summary>A snapshot of the processor's load: queued items (in total and per priority level), batches in flight,
    /// slots, queue capacity and the estimated wait of a new item. Cheap and allocation-free: call it per request.</summary>
    /// <returns>The snapshot.</returns>
    ProcessorLoad GetLoad();
}
