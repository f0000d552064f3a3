using System.Globalization;
using System.Text;

namespace Batching.Samples.WebApi;

/// <summary>
/// The <c>X-Batching-Load</c> response header: the serving processor's load (<see cref="IBatchProcessor{TIn, TOut}.GetLoad"/>)
/// when the response starts, on every response of the inference endpoints (success or error), so a router can send the
/// next request to the least-loaded instance without polling.
/// </summary>
/// <remarks>
/// <para>The value is a structured-field dictionary (RFC 8941): comma-separated <c>key=value</c> members whose values are
/// integers, or decimals with at most three fractional digits. Splitting on <c>,</c> and then on the first <c>=</c> parses it.</para>
/// <code>
/// X-Batching-Load: queued=12, waiting=0, in_flight=1, slots=2, capacity=1024, estimated_wait_ms=3.2, queued_p0=10, queued_p1=2, estimated_wait_ms_p0=3.2, estimated_wait_ms_p1=7.9
/// </code>
/// <list type="bullet">
/// <item><c>queued</c>: items in the queue, over every priority level (a multi-vector request counts one per vector).</item>
/// <item><c>waiting</c>: items of callers waiting for queue space (<see cref="QueueFullMode.Wait"/> only; 0 in Reject mode).</item>
/// <item><c>in_flight</c> and <c>slots</c>: batches running now, and how many may run at once.</item>
/// <item><c>capacity</c>: the most items the queue holds; <c>queued</c> at <c>capacity</c> means the next request gets 503.</item>
/// <item><c>estimated_wait_ms</c>: how long a new priority-0 item would wait for its batch to start (0 while a slot is free).</item>
/// <item><c>queued_pN</c>, <c>estimated_wait_ms_pN</c>: the same per priority level N, present only when the processor has
/// more than one level.</item>
/// </list>
/// </remarks>
internal static class LoadHeader
{
    public const string Name = "X-Batching-Load";

    /// <summary>Sets the header when the response starts (after any error handler has cleared the response), so every
    /// response carries the load as it is when it is sent.</summary>
    public static void AddOnStarting(HttpContext context, IBatchProcessor<ReadOnlyMemory<float>, float[]> processor) =>
        context.Response.OnStarting(static state =>
        {
            (HttpContext context, IBatchProcessor<ReadOnlyMemory<float>, float[]> processor) = ((HttpContext, IBatchProcessor<ReadOnlyMemory<float>, float[]>))state;
            context.Response.Headers[Name] = Format(processor.GetLoad());
            return Task.CompletedTask;
        }, (context, processor));

    public static string Format(ProcessorLoad load)
    {
        var text = new StringBuilder(160);
        text.Append(CultureInfo.InvariantCulture,
            $"queued={load.QueuedItems}, waiting={load.WaitingItems}, in_flight={load.BatchesInFlight}, slots={load.Slots}, capacity={load.QueueCapacity}, estimated_wait_ms=");
        Milliseconds(text, load.EstimatedWait);
        if (load.PriorityLevels > 1)
        {
            for (int level = 0; level < load.PriorityLevels; level++)
            {
                text.Append(CultureInfo.InvariantCulture, $", queued_p{level}={load.GetQueuedItems(level)}");
            }

            for (int level = 0; level < load.PriorityLevels; level++)
            {
                text.Append(CultureInfo.InvariantCulture, $", estimated_wait_ms_p{level}=");
                Milliseconds(text, load.GetEstimatedWait(level));
            }
        }

        return text.ToString();
    }

    // An sf-decimal: at least one and at most three fractional digits.
    private static void Milliseconds(StringBuilder text, TimeSpan wait) =>
        text.Append(wait.TotalMilliseconds.ToString("0.0##", CultureInfo.InvariantCulture));
}
