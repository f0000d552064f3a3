namespace Batching;

/// <summary>Tuning for <see cref="FlushPolicy.Adaptive"/>.</summary>
public sealed class AdaptiveFlushOptions
{
    /// <summary>
    /// The latency a held batch must still meet: the policy holds a partial batch only when the oldest item's
    /// predicted completion (wait so far + time to fill + predicted batch cost) stays within it. Holding never
    /// exceeds <see cref="BatchingOptions.MaxDelay"/> either.
    /// </summary>
    /// <value>Default: 5 ms. Allowed: more than zero.</value>
    public TimeSpan LatencyTarget { get; set; } = TimeSpan.FromMilliseconds(5);

    /// <summary>How many recent batches the cost model <c>time = a + b·n</c> is fitted over.</summary>
    /// <value>Default: 64. Allowed: 4 to 4,096.</value>
    public int ModelWindow { get; set; } = 64;

    /// <summary>Batches observed before the model is trusted; until then the policy never holds.</summary>
    /// <value>Default: 8. Allowed: 2 to <see cref="ModelWindow"/>.</value>
    public int WarmupBatches { get; set; } = 8;
}
