using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;

namespace Batching.Diagnostics;

/// <summary>
/// One processor's instruments. Every measurement carries the processor's name, so processors that share the
/// "Batching" meter stay apart. Each recording first checks <c>Enabled</c>, so without a listener the hot path pays a
/// field read.
/// </summary>
/// <remarks>Listeners are user code: an <see cref="ActivityListener"/> or <see cref="MeterListener"/> callback runs
/// inside these calls and may throw. Every method here catches that, logs it once in a while (never more than once per
/// second), and drops the measurement: instrumentation must never fail a caller or stop the processor.</remarks>
internal sealed class ProcessorTelemetry : Instruments
{
    internal static readonly ActivitySource Source = new(BatchingTelemetry.ActivitySourceName);

    private readonly KeyValuePair<string, object?> _processor;
    private readonly KeyValuePair<string, object?> _policy;
    // Null when a listener's InstrumentPublished callback threw while the instrument was created: that measurement is
    // then not recorded, and the processor is built anyway.
    private readonly Counter<long>? _requests;
    private readonly Histogram<int>? _batchSize;
    private readonly Histogram<double>? _batchDuration;
    private readonly Histogram<double>? _queueWait;

    public ProcessorTelemetry(string processorName, string policyName, IMeterFactory? meterFactory, ILogger logger, int priorityLevels,
        Func<int, int> queueDepthAt, Func<int> inFlightBatches, Func<double> estimatedWaitSeconds)
        : base(processorName, meterFactory, logger)
    {
        _processor = new(BatchingTelemetry.ProcessorTag, processorName);
        _policy = new(BatchingTelemetry.PolicyTag, policyName);
        _requests = Guard(() => Meter.CreateCounter<long>("batching.requests", "{request}",
            "Requests that finished, by outcome: completed, failed, cancelled or rejected."));
        _batchSize = Guard(() => Meter.CreateHistogram<int>("batching.batch.size", "{item}", "Items per handler call.",
            advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] }));
        var seconds = SecondsAdvice;
        _batchDuration = Guard(() => Meter.CreateHistogram<double>("batching.batch.duration", "s", "Time a handler call took, by outcome.", advice: seconds));
        _queueWait = Guard(() => Meter.CreateHistogram<double>("batching.queue.wait", "s", "Time from an item's arrival until its batch was dispatched.", advice: seconds));
        var tags = new[] { _processor };
        PerLevelGauge("batching.queue.depth", priorityLevels, queueDepthAt, "{item}", "Items waiting in the queue, per priority level.");
        Guard(() => Meter.CreateObservableGauge("batching.queue.estimated_wait", () => new Measurement<double>(estimatedWaitSeconds(), tags), "s",
            "How long a new item of priority 0 would wait for its batch to start, estimated from the queue, the running batches and the fitted batch cost."));
        Guard(() => Meter.CreateObservableUpDownCounter("batching.batches.in_flight", () => new Measurement<int>(inFlightBatches(), tags), "{batch}", "Batches whose handler call is running."));
    }

    public bool QueueWaitEnabled => _queueWait?.Enabled == true;

    public void RequestsFinished(string outcome, int count)
    {
        if (count > 0 && _requests?.Enabled == true)
        {
            try
            {
                _requests.Add(count, _processor, new(BatchingTelemetry.RequestOutcomeTag, outcome));
            }
            catch (Exception ex)
            {
                ListenerFailed(ex);
            }
        }
    }

    public void QueueWait(TimeSpan wait)
    {
        try
        {
            _queueWait?.Record(wait.TotalSeconds, _processor);
        }
        catch (Exception ex)
        {
            ListenerFailed(ex);
        }
    }

    public void BatchStarted(int size)
    {
        if (_batchSize?.Enabled == true)
        {
            try
            {
                _batchSize.Record(size, _processor, _policy);
            }
            catch (Exception ex)
            {
                ListenerFailed(ex);
            }
        }
    }

    public void BatchFinished(TimeSpan duration, string outcome)
    {
        if (_batchDuration?.Enabled == true)
        {
            try
            {
                _batchDuration.Record(duration.TotalSeconds, _processor, new(BatchingTelemetry.BatchOutcomeTag, outcome));
            }
            catch (Exception ex)
            {
                ListenerFailed(ex);
            }
        }
    }

    /// <summary>Starts the batch's activity, linked to the activities its callers were in, or returns null when nobody
    /// listens. Must run where <see cref="Activity.Current"/> is null (the handler's clean context), so the activity is a root.</summary>
    public Activity? StartBatchActivity<TIn, TOut>(Internal.Request<TIn, TOut>[] parts, int partCount, int count)
    {
        if (!Source.HasListeners())
        {
            return null;
        }

        try
        {
            Debug.Assert(Activity.Current is null);
            List<ActivityLink>? links = null;
            for (int i = 0; i < partCount; i++)
            {
                if (parts[i].CallerActivity != default)
                {
                    (links ??= []).Add(new ActivityLink(parts[i].CallerActivity));
                }
            }

            Activity? activity = Source.StartActivity("batching.batch", ActivityKind.Internal, parentContext: default, links: links);
            if (activity is not null)
            {
                activity.SetTag(BatchingTelemetry.ProcessorTag, _processor.Value);
                activity.SetTag(BatchingTelemetry.PolicyTag, _policy.Value);
                activity.SetTag("batching.batch.size", count);
            }

            return activity;
        }
        catch (Exception ex)
        {
            ListenerFailed(ex);
            return null;
        }
    }

    /// <summary>Ends the batch's activity. <see cref="Activity.Stop"/> restores <see cref="Activity.Current"/> on the
    /// calling context, so this runs in the clean context, never in a caller's.</summary>
    public void StopBatchActivity(Activity activity, string outcome)
    {
        try
        {
            activity.SetTag(BatchingTelemetry.BatchOutcomeTag, outcome);
            if (outcome != Outcomes.Success)
            {
                activity.SetStatus(ActivityStatusCode.Error, outcome);
            }

            activity.Stop();
        }
        catch (Exception ex)
        {
            ListenerFailed(ex);
        }
    }
}

internal static class Outcomes
{
    public const string Completed = "completed";
    public const string Failed = "failed";
    public const string Cancelled = "cancelled";
    public const string Rejected = "rejected";
    public const string Expired = "expired";
    public const string Success = "success";
    public const string Failure = "failure";
    public const string Timeout = "timeout";
}
