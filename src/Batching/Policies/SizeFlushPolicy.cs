namespace Batching.Policies;

/// <summary>Dispatches the largest batch among the preferred sizes and MaxBatchSize that the queue can fill.</summary>
internal sealed class SizeFlushPolicy : FlushPolicy
{
    private readonly int[] _preferred;

    public SizeFlushPolicy(int[] preferredBatchSizes)
    {
        _preferred = [.. preferredBatchSizes.Distinct().Order()];
    }

    public override string Name => "size";

    public override void Validate(BatchingOptions options)
    {
        foreach (int size in _preferred)
        {
            BatchingOptions.Require(size >= 1 && size <= options.MaxBatchSize, "FlushPolicy",
                $"preferred batch sizes must be between 1 and MaxBatchSize ({options.MaxBatchSize})", size);
        }
    }

    public override FlushDecision Decide(in FlushContext context)
    {
        int queued = context.QueuedItems;
        if (queued >= context.MaxBatchSize)
        {
            return FlushDecision.Dispatch(context.MaxBatchSize);
        }

        // The list is short and sorted: the largest size the queue fills goes now, else wait for the smallest.
        for (int i = _preferred.Length - 1; i >= 0; i--)
        {
            if (_preferred[i] <= queued)
            {
                return FlushDecision.Dispatch(_preferred[i]);
            }
        }

        int next = _preferred.Length > 0 ? _preferred[0] : context.MaxBatchSize;
        return FlushDecision.Wait(Timeout.InfiniteTimeSpan, next);
    }
}
