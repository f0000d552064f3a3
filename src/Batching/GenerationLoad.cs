namespace Batching;

/// <summary>A snapshot of a generation processor's load, from <see cref="IGenerationProcessor{TPrompt, TToken}.GetLoad"/>.</summary>
/// <param name="ActiveSequences">Sequences admitted to the batch (stepping or parked), at most <see cref="MaxSequences"/>.</param>
/// <param name="ParkedSequences">Active sequences left out of steps because their consumer has not read <see cref="GenerationOptions.MaxBufferedTokens"/> tokens.</param>
/// <param name="QueuedSequences">Sequences waiting to join, over every priority level (in <see cref="QueueFullMode.Wait"/> mode this may exceed <see cref="QueueCapacity"/>: the excess are callers waiting for space).</param>
/// <param name="ActiveWeight">The total admission weight of the active sequences (their count when no weight is configured).</param>
/// <param name="MaxSequences">The most active sequences.</param>
/// <param name="MaxActiveWeight">The most total admission weight (<see cref="int.MaxValue"/> when no weight is configured).</param>
/// <param name="QueueCapacity">The most sequences waiting before a new one waits for space or is rejected.</param>
/// <param name="IsAccepting">Whether new sequences are accepted (false once disposal began).</param>
public readonly record struct GenerationLoad(int ActiveSequences, int ParkedSequences, int QueuedSequences, int ActiveWeight,
    int MaxSequences, int MaxActiveWeight, int QueueCapacity, bool IsAccepting);
