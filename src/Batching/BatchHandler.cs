namespace Batching;

/// <summary>Processes one batch: fills <paramref name="outputs"/>[i] with the result for <paramref name="inputs"/>[i].</summary>
/// <typeparam name="TIn">The type of one input item.</typeparam>
/// <typeparam name="TOut">The type of one output item.</typeparam>
/// <param name="inputs">The batch's inputs; between 1 and <see cref="BatchingOptions.MaxBatchSize"/> items. Valid only until the returned task completes.</param>
/// <param name="outputs">Exactly as long as <paramref name="inputs"/>, cleared to <c>default</c> before the call. Valid only until the returned task completes.</param>
/// <param name="cancellationToken">Cancelled when every item of the batch was cancelled by its caller, when the batch exceeds
/// <see cref="BatchingOptions.ExecutionTimeout"/>, or when shutdown gives up on it.</param>
/// <returns>A task that completes when every output is written.</returns>
/// <remarks>
/// <para>If the handler throws, every caller in the batch receives a <see cref="BatchExecutionException"/> wrapping it.</para>
/// <para>The handler runs on a thread-pool thread (with <see cref="BatchingOptions.InlineWhenIdle"/>, possibly on a lone
/// caller's thread), never on the processor's dispatcher, in a clean <see cref="ExecutionContext"/>: no AsyncLocal
/// value of the code that built the processor or of its callers is visible, <see cref="System.Diagnostics.Activity.Current"/>
/// is the batch's activity, and what the handler writes there does not survive into the next batch. It must not call
/// <c>ProcessAsync</c> of its own processor (that call fails with <see cref="InvalidOperationException"/>).</para>
/// </remarks>
public delegate ValueTask BatchHandler<TIn, TOut>(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken);

/// <summary>A batch handler as a type, for handlers that are resolved from a dependency injection container.</summary>
/// <typeparam name="TIn">The type of one input item.</typeparam>
/// <typeparam name="TOut">The type of one output item.</typeparam>
public interface IBatchHandler<TIn, TOut>
{
    /// <summary>Processes one batch; see <see cref="BatchHandler{TIn, TOut}"/> for the contract.</summary>
    /// <param name="inputs">The batch's inputs.</param>
    /// <param name="outputs">The outputs to fill, exactly as long as <paramref name="inputs"/>.</param>
    /// <param name="cancellationToken">Cancelled when the batch's result is no longer wanted.</param>
    /// <returns>A task that completes when every output is written.</returns>
    ValueTask HandleAsync(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken);
}
