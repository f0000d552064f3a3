namespace Batching;

/// <summary>Names to subscribe to for the library's telemetry.</summary>
public static class BatchingTelemetry
{
    /// <summary>The name of the <see cref="System.Diagnostics.Metrics.Meter"/> every processor reports to: "Batching".</summary>
    public const string MeterName = "Batching";

    /// <summary>The name of the <see cref="System.Diagnostics.ActivitySource"/> that traces batches: "Batching".</summary>
    public const string ActivitySourceName = "Batching";

    /// <summary>The tag that carries the processor's name on every measurement and activity.</summary>
    public const string ProcessorTag = "batching.processor";

    /// <summary>The tag that carries a request's outcome on <c>batching.requests</c>: completed, failed, cancelled, rejected,
    /// or expired (its queue timeout passed before it was dispatched). A multi-item call counts once.</summary>
    public const string RequestOutcomeTag = "batching.request.outcome";

    /// <summary>The tag that carries a batch's outcome on <c>batching.batch.duration</c> and batch activities: success, failure, timeout or cancelled.</summary>
    public const string BatchOutcomeTag = "batching.batch.outcome";

    /// <summary>The tag that carries the flush policy's name.</summary>
    public const string PolicyTag = "batching.policy";

    /// <summary>The tag that carries the priority level on <c>batching.queue.depth</c>.</summary>
    public const string PriorityTag = "batching.priority";
}
