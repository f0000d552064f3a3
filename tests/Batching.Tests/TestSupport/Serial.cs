namespace Batching.Tests.TestSupport;

/// <summary>Tests that measure real-time behaviour across processors run alone, not beside the rest of the suite,
/// so that the thread pool they observe is theirs.</summary>
[CollectionDefinition(nameof(Serial), DisableParallelization = true)]
public sealed class Serial;
