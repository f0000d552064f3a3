using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;

namespace Batching.Diagnostics;

/// <summary>
/// What every processor's instruments share: the "Batching" meter tagged with the processor's name, and the guard
/// around listeners. Listeners are user code: an <see cref="System.Diagnostics.ActivityListener"/> or
/// <see cref="MeterListener"/> callback runs inside these calls and may throw; the guard catches that, logs it at most
/// once a second, and drops the measurement, so instrumentation never fails a caller or stops a processor.
/// </summary>
internal abstract class Instruments : IDisposable
{
    /// <summary>Batching lives in the 10 µs to 10 s range; exporters' default buckets are sized for milliseconds.</summary>
    protected static readonly InstrumentAdvice<double> SecondsAdvice = new()
    {
        HistogramBucketBoundaries = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    };

    private readonly bool _ownsMeter;
    private readonly ILogger _logger;
    private readonly string _processorName;
    private long _lastListenerFailureLog = long.MinValue;

    protected Instruments(string processorName, IMeterFactory? meterFactory, ILogger logger)
    {
        var options = new MeterOptions(BatchingTelemetry.MeterName) { Tags = [new(BatchingTelemetry.ProcessorTag, processorName)] };
        _ownsMeter = meterFactory is null;
        Meter = meterFactory?.Create(options) ?? new Meter(options);
        _logger = logger;
        _processorName = processorName;
    }

    protected Meter Meter { get; }

    /// <summary>Creates an instrument; null when a listener's InstrumentPublished callback threw (that measurement is
    /// then not recorded, and the processor is built anyway).</summary>
    protected T? Guard<T>(Func<T> create)
        where T : class
    {
        try
        {
            return create();
        }
        catch (Exception ex)
        {
            ListenerFailed(ex);
            return null;
        }
    }

    /// <summary>An observable gauge with one measurement per priority level, tagged with the level.</summary>
    protected void PerLevelGauge(string name, int levels, Func<int, int> valueAt, string unit, string description)
    {
        var levelTags = new KeyValuePair<string, object?>[levels][];
        for (int level = 0; level < levels; level++)
        {
            levelTags[level] = [new(BatchingTelemetry.ProcessorTag, _processorName), new(BatchingTelemetry.PriorityTag, level)];
        }

        Guard(() => Meter.CreateObservableGauge(name, () =>
        {
            var measurements = new Measurement<int>[levelTags.Length];
            for (int level = 0; level < measurements.Length; level++)
            {
                measurements[level] = new Measurement<int>(valueAt(level), levelTags[level]);
            }

            return measurements;
        }, unit, description));
    }

    protected void ListenerFailed(Exception ex)
    {
        long now = Environment.TickCount64;
        long last = Interlocked.Read(ref _lastListenerFailureLog);
        if (now - last >= 1000 && Interlocked.CompareExchange(ref _lastListenerFailureLog, now, last) == last)
        {
            Log.ListenerFailed(_logger, _processorName, ex);
        }
    }

    public void Dispose()
    {
        if (_ownsMeter)
        {
            try
            {
                Meter.Dispose();
            }
            catch (Exception)
            {
                // A MeterListener's InstrumentPublished/MeasurementsCompleted callback threw; disposal goes on.
            }
        }
    }
}
