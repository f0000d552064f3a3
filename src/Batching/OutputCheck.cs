namespace Batching;

/// <summary>
/// How the processor detects outputs that the handler never wrote. Output slots are cleared to <c>default</c>
/// before every batch, so an unwritten slot can never carry a stale result from an earlier batch to another
/// caller; this setting decides whether such a slot fails its caller instead of returning <c>default</c>.
/// </summary>
public enum OutputCheck
{
    /// <summary>A <c>null</c> output fails its caller with <see cref="BatchExecutionException"/>; other values, <c>default</c> included, are returned.
    /// Suits reference-type and <see cref="Nullable{T}"/> outputs where <c>null</c> never is a real result.</summary>
    RejectNull = 0,

    /// <summary>An output equal to <c>default(TOut)</c> (0, <c>null</c>, an all-zero struct) fails its caller. Use when <c>default</c> never is a real result.</summary>
    RejectDefault = 1,

    /// <summary>No check: whatever is in the slot, <c>default</c> included, is returned.</summary>
    None = 2,
}
