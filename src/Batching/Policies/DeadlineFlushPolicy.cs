namespace Batching.Policies;

/// <summary>Dispatches a full batch at once, else waits for the oldest item's MaxDelay (enforced by the processor).</summary>
internal sealed class DeadlineFlushPolicy : FlushPolicy
{
    public override string Name => "deadline";

    public override FlushDecision Decide(in FlushContext context) =>
        context.QueuedItems >= context.MaxBatchSize
            ? FlushDecision.Dispatch(context.MaxBatchSize)
            : FlushDecision.Wait(Timeout.InfiniteTimeSpan, context.MaxBatchSize);
}
