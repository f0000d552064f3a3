namespace Batching;

/// <summary>A run of consecutive inputs of one multi-item call that failed for the same reason.</summary>
/// <param name="StartIndex">The index of the first failed input in the call's <c>inputs</c>.</param>
/// <param name="Count">How many consecutive inputs, from <paramref name="StartIndex"/>, failed.</param>
/// <param name="Error">Why: a <see cref="BatchExecutionException"/> (the handler threw, or left an output unwritten), a
/// <see cref="TimeoutException"/> (the batch ran past ExecutionTimeout, or the items expired in the queue), or an
/// <see cref="ObjectDisposedException"/> (the processor stopped first).</param>
public readonly record struct BatchItemFailure(int StartIndex, int Count, Exception Error);
