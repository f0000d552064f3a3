namespace Batching;

/// <summary>
/// Thrown to a caller when the batch carrying its item failed: the handler threw (the original exception is the
/// <see cref="Exception.InnerException"/>), or the handler returned without writing the caller's output.
/// </summary>
public sealed class BatchExecutionException : Exception
{
    /// <summary>Creates the exception with a default message.</summary>
    public BatchExecutionException() : base("The batch handler failed.") { }

    /// <summary>Creates the exception with <paramref name="message"/>.</summary>
    /// <param name="message">The message.</param>
    public BatchExecutionException(string message) : base(message) { }

    /// <summary>Creates the exception with <paramref name="message"/> and the handler's exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The exception the handler threw.</param>
    public BatchExecutionException(string message, Exception innerException) : base(message, innerException) { }

    internal BatchExecutionException(string message, Exception? innerException, int batchSize)
        : base(message, innerException)
    {
        BatchSize = batchSize;
    }

    internal BatchExecutionException(string message, Exception? innerException, IReadOnlyList<BatchItemFailure> itemFailures)
        : base(message, innerException)
    {
        ItemFailures = itemFailures;
    }

    /// <summary>The number of items in the handler call that failed (after any poison isolation), or 0 when unknown
    /// (always 0 for a multi-item call, whose items may have run in several batches: see <see cref="ItemFailures"/>).</summary>
    public int BatchSize { get; }

    /// <summary>For a multi-item call (<see cref="IBatchProcessor{TIn, TOut}.ProcessManyAsync"/>): which of its inputs
    /// failed, as runs of consecutive indexes, in index order, each with its reason. Empty for a single-item call.</summary>
    public IReadOnlyList<BatchItemFailure> ItemFailures { get; } = [];
}
