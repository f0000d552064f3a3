namespace Batching;

/// <summary>
/// One iteration of a generation model over every active sequence: advance <c>states[i]</c> in place, write sequence
/// i's next token to <c>tokens[i]</c>, and set <c>finished[i]</c> when sequence i has ended (the token written in that
/// step is still delivered). The engine calls it once per step, never concurrently with itself.
/// </summary>
/// <typeparam name="TState">A sequence's model state (for example its position, its KV-cache handle, its sampler).</typeparam>
/// <typeparam name="TToken">The type of one generated token.</typeparam>
/// <param name="states">The active sequences' states, one per sequence; the step updates them in place. Valid only until the returned task completes.</param>
/// <param name="tokens">Where the step writes each sequence's next token; as long as <paramref name="states"/>.</param>
/// <param name="finished">All <see langword="false"/> on entry; the step sets <c>finished[i]</c> for each sequence that ended.</param>
/// <param name="cancellationToken">Cancelled when the step runs past <see cref="GenerationOptions.StepTimeout"/> or the
/// processor is shutting down past its <see cref="GenerationOptions.ShutdownTimeout"/>.</param>
/// <returns>A task that completes when the step has written every token.</returns>
public delegate ValueTask GenerationStep<TState, TToken>(Memory<TState> states, Memory<TToken> tokens, Memory<bool> finished, CancellationToken cancellationToken);
