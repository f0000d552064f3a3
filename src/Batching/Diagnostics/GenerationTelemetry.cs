using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;

namespace Batching.Diagnostics;

/// <summary>One generation processor's instruments and its per-request activity; every call is guarded against
/// listeners that throw (see <see cref="Instruments"/>).</summary>
internal sealed class GenerationTelemetry : Instruments
{
    private readonly KeyValuePair<string, object?> _processor;
    private readonly Counter<long>? _requests;
    private readonly Counter<long>? _tokens;
    private readonly Histogram<int>? _stepSize;
    private readonly Histogram<double>? _stepDuration;
    private readonly Histogram<double>? _timeToFirstToken;
    private readonly Histogram<double>? _interTokenLatency;

    public GenerationTelemetry(string processorName, IMeterFactory? meterFactory, ILogger logger, int priorityLevels,
        Func<int, int> queuedAt, Func<int> activeSequences)
        : base(processorName, meterFactory, logger)
    {
        _processor = new(BatchingTelemetry.ProcessorTag, processorName);
        _requests = Guard(() => Meter.CreateCounter<long>("batching.generation.requests", "{request}",
            "Generation requests that ended, by outcome: completed, failed, cancelled, rejected or expired."));
        _tokens = Guard(() => Meter.CreateCounter<long>("batching.generation.tokens", "{token}",
            "Tokens generated, by the outcome of their request: completed, failed, cancelled or expired."));
        _stepSize = Guard(() => Meter.CreateHistogram<int>("batching.generation.step.size", "{sequence}", "Sequences per step.",
            advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] }));
        _stepDuration = Guard(() => Meter.CreateHistogram<double>("batching.generation.step.duration", "s", "Time one step took, by outcome.", advice: SecondsAdvice));
        _timeToFirstToken = Guard(() => Meter.CreateHistogram<double>("batching.generation.time_to_first_token", "s",
            "Time from the start of a request's enumeration until its first token was produced.", advice: SecondsAdvice));
        _interTokenLatency = Guard(() => Meter.CreateHistogram<double>("batching.generation.inter_token_latency", "s",
            "Time between consecutive tokens of one request.", advice: SecondsAdvice));
        var tags = new[] { _processor };
        Guard(() => Meter.CreateObservableUpDownCounter("batching.generation.active_sequences", () => new Measurement<int>(activeSequences(), tags),
            "{sequence}", "Sequences in the batch (stepping or parked)."));
        PerLevelGauge("batching.generation.queue.depth", priorityLevels, queuedAt, "{sequence}", "Sequences waiting to join the batch, per priority level.");
    }

    public bool TokenLatencyEnabled => _timeToFirstToken?.Enabled == true || _interTokenLatency?.Enabled == true;

    public void RequestEnded(string outcome, int tokens)
    {
        try
        {
            var outcomeTag = new KeyValuePair<string, object?>(BatchingTelemetry.RequestOutcomeTag, outcome);
            if (_requests?.Enabled == true)
            {
                _requests.Add(1, _processor, outcomeTag);
            }

            if (tokens > 0 && _tokens?.Enabled == true)
            {
                _tokens.Add(tokens, _processor, outcomeTag);
            }
        }
        catch (Exception ex)
        {
            ListenerFailed(ex);
        }
    }

    public void StepFinished(int size, TimeSpan duration, string outcome)
    {
        try
        {
            if (_stepSize?.Enabled == true)
            {
                _stepSize.Record(size, _processor);
            }

            if (_stepDuration?.Enabled == true)
            {
                _stepDuration.Record(duration.TotalSeconds, _processor, new(BatchingTelemetry.BatchOutcomeTag, outcome));
            }
        }
        catch (Exception ex)
        {
            ListenerFailed(ex);
        }
    }

    public void TokenProduced(bool first, TimeSpan sincePrevious)
    {
        try
        {
            (first ? _timeToFirstToken : _interTokenLatency)?.Record(sincePrevious.TotalSeconds, _processor);
        }
        catch (Exception ex)
        {
            ListenerFailed(ex);
        }
    }

    /// <summary>Starts the request's activity as a child of the caller's current one, without making it current:
    /// it spans the whole generation, which outlives the call that started it.</summary>
    public Activity? StartRequestActivity(int priority)
    {
        if (!ProcessorTelemetry.Source.HasListeners())
        {
            return null;
        }

        Activity? caller = Activity.Current;
        try
        {
            Activity? activity = ProcessorTelemetry.Source.StartActivity("batching.generation", ActivityKind.Internal);
            activity?.SetTag(BatchingTelemetry.ProcessorTag, _processor.Value);
            activity?.SetTag(BatchingTelemetry.PriorityTag, priority);
            return activity;
        }
        catch (Exception ex)
        {
            ListenerFailed(ex);
            return null;
        }
        finally
        {
            Activity.Current = caller;
        }
    }

    public void StopRequestActivity(Activity activity, string outcome, int tokens)
    {
        Activity? current = Activity.Current;
        try
        {
            activity.SetTag(BatchingTelemetry.RequestOutcomeTag, outcome);
            activity.SetTag("batching.generation.tokens", tokens);
            if (outcome != Outcomes.Completed)
            {
                activity.SetStatus(ActivityStatusCode.Error, outcome);
            }

            activity.Stop();
        }
        catch (Exception ex)
        {
            ListenerFailed(ex);
        }
        finally
        {
            // Stop makes the activity's parent current on this thread, which may be the step loop or another caller's.
            Activity.Current = current;
        }
    }
}
