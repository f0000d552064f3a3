namespace Batching;

/// <summary>Thrown by <see cref="IBatchProcessor{TIn, TOut}.ProcessAsync(TIn, CancellationToken)"/> when the queue is full and <see cref="BatchingOptions.QueueFullMode"/> is <see cref="QueueFullMode.Reject"/>.</summary>
/// <remarks>The item was never queued; retrying later, or on another instance, is safe.</remarks>
public sealed class BatchQueueFullException : Exception
{
    /// <summary>Creates the exception with a default message.</summary>
    public BatchQueueFullException() : base("The batching queue is full.") { }

    /// <summary>Creates the exception with <paramref name="message"/>.</summary>
    /// <param name="message">The message.</param>
    public BatchQueueFullException(string message) : base(message) { }

    /// <summary>Creates the exception with <paramref name="message"/> and an inner exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public BatchQueueFullException(string message, Exception innerException) : base(message, innerException) { }

    internal BatchQueueFullException(string? processorName, int capacity)
        : base($"The batching queue{NameSuffix(processorName)} is full ({capacity} items, QueueCapacity) and QueueFullMode is Reject; the item was not queued.")
    {
        Capacity = capacity;
    }

    /// <summary>The queue capacity that was reached, when known.</summary>
    public int Capacity { get; }

    internal static string NameSuffix(string? name) => string.IsNullOrEmpty(name) ? "" : $" of processor '{name}'";
}
