namespace Batching.Ilgpu;

/// <summary>
/// A GPU processor over rows (<see cref="GpuBatchProcessor.CreateRows{T, TKernel}"/>). Besides the convenient
/// <see cref="IBatchProcessor{TIn, TOut}"/> calls, which return a new array per row, it writes results into buffers the
/// caller owns, so a steady stream of calls allocates nothing.
/// </summary>
/// <typeparam name="T">The element type of rows.</typeparam>
/// <remarks>
/// A buffer passed to <see cref="ProcessRowAsync"/> or <see cref="ProcessRowsAsync"/> is written only while the call
/// is pending: once the returned task has completed — with its result, an exception or a cancellation — the library
/// never touches it again, even when the batch that carried the row is still running (its output for a cancelled
/// call is dropped). Await each returned task once.
/// </remarks>
public interface IGpuRowProcessor<T> : IGpuBatchProcessor<ReadOnlyMemory<T>, T[]>
    where T : unmanaged
{
    /// <summary>The number of values in one input row.</summary>
    int InputWidth { get; }

    /// <summary>The number of values in one output row.</summary>
    int OutputWidth { get; }

    /// <summary>Runs one row and writes its result into <paramref name="output"/>.</summary>
    /// <param name="input">Exactly <see cref="InputWidth"/> values; read until the call completes.</param>
    /// <param name="output">Exactly <see cref="OutputWidth"/> values; written before the call completes successfully.</param>
    /// <param name="options">Priority and queue timeout.</param>
    /// <param name="cancellationToken">Cancels the call; the row leaves the queue, or its result is dropped.</param>
    /// <returns>A task that completes when <paramref name="output"/> holds the result.</returns>
    /// <exception cref="ArgumentException">A buffer has the wrong length, or the row is rejected
    /// (<see cref="GpuOptions.RejectNonFiniteInputs"/>); nothing was queued.</exception>
    ValueTask ProcessRowAsync(ReadOnlyMemory<T> input, Memory<T> output, RequestOptions options = default, CancellationToken cancellationToken = default);

    /// <summary>Runs k rows given as one row-major block and writes their results into another, as one multi-item
    /// call (split across batches as room allows, like <see cref="IBatchProcessor{TIn, TOut}.ProcessManyAsync"/>).</summary>
    /// <param name="inputs">k × <see cref="InputWidth"/> values, row after row.</param>
    /// <param name="outputs">k × <see cref="OutputWidth"/> values, row after row.</param>
    /// <param name="options">Priority and queue timeout.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task that completes when every output row is written, or fails as a multi-item call does
    /// (<see cref="BatchExecutionException.ItemFailures"/> name the rows).</returns>
    /// <exception cref="ArgumentException">The blocks are not whole rows, hold different row counts, or a row is
    /// rejected; nothing was queued.</exception>
    ValueTask ProcessRowsAsync(ReadOnlyMemory<T> inputs, Memory<T> outputs, RequestOptions options = default, CancellationToken cancellationToken = default);
}
