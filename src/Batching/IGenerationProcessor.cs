namespace Batching;

/// <summary>
/// Generates token sequences with iteration-level scheduling (continuous batching): every active sequence takes part
/// in each step of the model; after every step, finished sequences leave and waiting ones join, so short requests
/// never wait for the longest one in their batch. Each call streams its own tokens, in order, as they are produced.
/// </summary>
/// <typeparam name="TPrompt">The type of one request.</typeparam>
/// <typeparam name="TToken">The type of one generated token.</typeparam>
/// <remarks>
/// Every enumeration ends exactly once: it completes after the sequence's last token (the one its step marked
/// finished, or the <see cref="GenerationOptions.MaxTokensPerSequence"/>-th), or it throws. Generation is paced by the
/// consumer: a sequence whose <see cref="GenerationOptions.MaxBufferedTokens"/> tokens wait unread is left out of
/// steps until its consumer reads. Stopping the enumeration (disposing the enumerator, as <c>await foreach</c> does
/// on <c>break</c> or when the consumer fails) or cancelling its token removes the sequence before the next step.
/// Implementations are thread-safe. Dispose the processor to finish active sequences and stop it.
/// </remarks>
public interface IGenerationProcessor<TPrompt, TToken> : IAsyncDisposable
{
    /// <summary>Generates the tokens for <paramref name="prompt"/>, at priority 0 and without a queue timeout.</summary>
    /// <param name="prompt">The request; turned into the sequence's state when the enumeration starts.</param>
    /// <param name="cancellationToken">Cancels this sequence only (as does the token given to <c>WithCancellation</c>).</param>
    /// <returns>The tokens, streamed. Nothing is queued until the enumeration starts; it can be enumerated once.</returns>
    /// <exception cref="BatchQueueFullException">From the first <c>MoveNextAsync</c>: the queue is full and
    /// <see cref="GenerationOptions.QueueFullMode"/> is <see cref="QueueFullMode.Reject"/>.</exception>
    /// <exception cref="BatchExecutionException">The step failed while this sequence was in it (the step's exception is
    /// the inner exception); the tokens produced before are delivered first.</exception>
    /// <exception cref="TimeoutException">A step carrying this sequence ran past <see cref="GenerationOptions.StepTimeout"/>,
    /// or the sequence waited to join past its <see cref="RequestOptions.Timeout"/>.</exception>
    /// <exception cref="OperationCanceledException">A cancellation token was cancelled.</exception>
    /// <exception cref="ObjectDisposedException">The processor was disposed before the sequence could finish.</exception>
    IAsyncEnumerable<TToken> GenerateAsync(TPrompt prompt, CancellationToken cancellationToken = default);

    /// <summary>Generates the tokens for <paramref name="prompt"/> at the priority of <paramref name="options"/>, waiting
    /// to join the running batch no longer than its <see cref="RequestOptions.Timeout"/>.</summary>
    /// <param name="prompt">The request.</param>
    /// <param name="options">The priority level (admission draws from the levels by weighted fair sharing, as in
    /// <see cref="BatchingOptions.PriorityWeights"/>) and the longest wait before the sequence joins a step (once it
    /// runs, it runs to its end; cancel its token for an overall deadline).</param>
    /// <param name="cancellationToken">Cancels this sequence only.</param>
    /// <returns>The tokens, streamed, as for <see cref="GenerateAsync(TPrompt, CancellationToken)"/>.</returns>
    /// <exception cref="ArgumentException"><paramref name="options"/> has a priority outside the processor's levels or a negative timeout (other than infinite).</exception>
    IAsyncEnumerable<TToken> GenerateAsync(TPrompt prompt, RequestOptions options, CancellationToken cancellationToken = default);

    /// <summary>A snapshot of the processor's load, cheap and allocation-free.</summary>
    /// <returns>Active, parked and waiting sequences, and the limits.</returns>
    GenerationLoad GetLoad();
}
