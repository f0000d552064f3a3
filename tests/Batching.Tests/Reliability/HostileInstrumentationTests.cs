using System.Diagnostics;
using System.Diagnostics.Metrics;
using Batching.Tests.Diagnostics;
using Batching.Tests.TestSupport;
using Microsoft.Extensions.Logging;

namespace Batching.Tests.Reliability;

/// <summary>
/// Instrumentation is user code too: a logging provider, an <see cref="ActivityListener"/> or a
/// <see cref="MeterListener"/> that throws must not hang callers, kill the dispatcher or the process, or make
/// DisposeAsync throw; the processor keeps serving.
/// </summary>
[Collection(nameof(TelemetryTests))] // listeners are process-wide
public class HostileInstrumentationTests
{
    /// <summary>Samples every activity of the Batching source and throws from its start and stop callbacks.</summary>
    internal static ActivityListener AddThrowingActivityListener()
    {
        var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == BatchingTelemetry.ActivitySourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStarted = _ => throw new InvalidOperationException("listener start"),
            ActivityStopped = _ => throw new InvalidOperationException("listener stop"),
        };
        ActivitySource.AddActivityListener(listener);
        return listener;
    }

    private sealed class ThrowingLoggerProvider : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new ThrowingLogger();

        public void Dispose()
        {
        }

        private sealed class ThrowingLogger : ILogger
        {
            public IDisposable BeginScope<TState>(TState state)
                where TState : notnull => throw new InvalidOperationException("logger scope");

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                throw new InvalidOperationException("logging provider failed");
        }
    }

    /// <summary>Runs a mixed workload (successes, handler failures, timeouts, cancellations) and disposes.</summary>
    private static async Task RunWorkloadAsync(ILoggerFactory? loggers, string name)
    {
        var handler = new FaultyHandler { Plan = n => n % 5 == 0 ? Fault.Throw : n % 17 == 0 ? Fault.Hang : Fault.None, HangFor = TimeSpan.FromMilliseconds(400) };
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            Name = name,
            MaxBatchSize = 8,
            MaxConcurrentBatches = 2,
            ExecutionTimeout = TimeSpan.FromMilliseconds(100),
        }, loggers);
        var ledger = new Ledger($"hostile instrumentation: {name}");
        for (int i = 0; i < 400; i++)
        {
            using var cts = new CancellationTokenSource();
            _ = ledger.Submit(processor, i, i % 23 == 0 ? new CancellationToken(true) : default);
            if (i % 50 == 0)
            {
                await Task.Yield();
            }
        }

        LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
        Assert.True(report.Succeeded > 0 && report.Failed > 0, report.ToString());
        await Reliably.StillServesAsync(processor, handler);
        await processor.DisposeAsync().AsTask().WithinBoundAsync(); // must not throw
        await Assert.ThrowsAsync<ObjectDisposedException>(() => processor.ProcessAsync(1).AsTask());
    }

    [Fact]
    public async Task A_logging_provider_that_throws_changes_nothing_for_callers()
    {
        using var loggers = LoggerFactory.Create(b => b.AddProvider(new ThrowingLoggerProvider()).SetMinimumLevel(LogLevel.Trace));
        await RunWorkloadAsync(loggers, "throwing-logger");
    }

    [Fact]
    public async Task An_ActivityListener_that_throws_changes_nothing_for_callers()
    {
        using ActivityListener listener = AddThrowingActivityListener();
        await RunWorkloadAsync(null, "throwing-activity-listener");

        using var sampler = new ActivityListener
        {
            ShouldListenTo = source => source.Name == BatchingTelemetry.ActivitySourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => throw new InvalidOperationException("sampler"),
        };
        listener.Dispose();
        ActivitySource.AddActivityListener(sampler);
        await RunWorkloadAsync(null, "throwing-sampler");
    }

    [Fact]
    public async Task A_MeterListener_that_throws_changes_nothing_for_callers_nor_for_disposal()
    {
        const string Name = "throwing-meter-listener";
        bool hostile = true;
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == BatchingTelemetry.MeterName)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
            // Called when our processor's meter is disposed, i.e. inside DisposeAsync.
            MeasurementsCompleted = (instrument, _) =>
            {
                if (hostile && instrument.Meter.Tags?.Any(t => t.Key == BatchingTelemetry.ProcessorTag && Equals(t.Value, Name)) == true)
                {
                    throw new InvalidOperationException("measurements completed");
                }
            },
        };
        listener.SetMeasurementEventCallback<int>((_, _, tags, _) => ThrowFor(tags));
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) => ThrowFor(tags));
        listener.SetMeasurementEventCallback<double>((_, _, tags, _) => ThrowFor(tags));
        listener.Start();
        await RunWorkloadAsync(null, Name);

        // Meter.Dispose stops at the first callback that throws and leaves the rest published; the listener's own
        // disposal would meet them again. That is the listener's problem, not the processor's.
        hostile = false;

        static void ThrowFor(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var tag in tags)
            {
                if (tag.Key == BatchingTelemetry.ProcessorTag && Equals(tag.Value, Name))
                {
                    throw new InvalidOperationException("measurement callback failed");
                }
            }
        }
    }
}
