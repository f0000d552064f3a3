using System.Diagnostics;
using System.Diagnostics.Metrics;
using Batching.Tests.TestSupport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.Diagnostics;

/// <summary>Reads the real instruments with a MeterListener and asserts on the values.</summary>
[Collection(nameof(TelemetryTests))] // listeners are process-wide
public class TelemetryTests
{
    internal sealed class Recorder : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly string _processor;

        public Recorder(string processor)
        {
            _processor = processor;
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == BatchingTelemetry.MeterName)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Add(i, v, tags));
            _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
            _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Add(i, v, tags));
            _listener.Start();
        }

        public List<(string Name, double Value, Dictionary<string, object?> Tags)> Measurements { get; } = [];

        public void Observe() => _listener.RecordObservableInstruments();

        public double Sum(string name, string? tag = null, string? value = null)
        {
            lock (Measurements)
            {
                return Measurements.Where(m => m.Name == name && (tag is null || Equals(m.Tags.GetValueOrDefault(tag), value))).Sum(m => m.Value);
            }
        }

        public double[] Values(string name)
        {
            lock (Measurements)
            {
                return Measurements.Where(m => m.Name == name).Select(m => m.Value).ToArray();
            }
        }

        private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var dict = new Dictionary<string, object?>();
            foreach (var tag in tags)
            {
                dict[tag.Key] = tag.Value;
            }

            if (Equals(dict.GetValueOrDefault(BatchingTelemetry.ProcessorTag), _processor))
            {
                lock (Measurements)
                {
                    Measurements.Add((instrument.Name, value, dict));
                }
            }
        }

        public void Dispose() => _listener.Dispose();
    }

    [Fact]
    public async Task Queue_depth_is_reported_per_priority_level_with_the_estimated_wait()
    {
        string name = $"levels-{Guid.NewGuid():N}";
        using var recorder = new Recorder(name);
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { Name = name, MaxBatchSize = 2, PriorityLevels = 3 });
        Task<int> first = processor.ProcessAsync(0).AsTask();
        await handler.Started.WaitAsync(Wait.Bound);
        Task[] queued =
        [
            processor.ProcessAsync(1, new RequestOptions(0)).AsTask(),
            processor.ProcessManyAsync(new[] { 2, 3, 4 }, new int[3], new RequestOptions(2)).AsTask(),
        ];
        await Wait.UntilAsync(() => processor.GetLoad().QueuedItems == 4, "four items are queued");

        recorder.Observe();
        List<(string Name, double Value, Dictionary<string, object?> Tags)> depth;
        lock (recorder.Measurements)
        {
            depth = [.. recorder.Measurements.Where(m => m.Name == "batching.queue.depth")];
        }

        Assert.Equal([1, 0, 3], depth.OrderBy(m => (int)m.Tags[BatchingTelemetry.PriorityTag]!).Select(m => m.Value));
        Assert.Single(recorder.Values("batching.queue.estimated_wait"));
        handler.Release(gate);
        await Task.WhenAll(queued.Append(first)).WithinBoundAsync();
    }

    [Fact]
    public async Task Metrics_count_every_request_outcome_and_describe_each_batch()
    {
        string name = $"metrics-{Guid.NewGuid():N}";
        using var recorder = new Recorder(name);
        var handler = new RecordingHandler { IsPoison = x => x == 100 };
        var gate = new TaskCompletionSource();
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            Name = name,
            MaxBatchSize = 4,
            QueueCapacity = 4,
            QueueFullMode = QueueFullMode.Reject,
            MaxDelay = TimeSpan.FromMilliseconds(20),
            FlushPolicy = FlushPolicy.Deadline,
        });

        // 8 good items in two full batches.
        await Task.WhenAll(Enumerable.Range(0, 4).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();
        await Task.WhenAll(Enumerable.Range(4, 4).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();

        // One failing batch of 4.
        var failing = Enumerable.Range(100, 4).Select(i => processor.ProcessAsync(i).AsTask()).ToArray();
        await Task.WhenAll(failing.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default))).WithinBoundAsync();

        // One cancelled while queued, and rejections while a batch blocks and the queue is full.
        handler.Gate = gate.Task;
        var blocked = Enumerable.Range(200, 4).Select(i => processor.ProcessAsync(i).AsTask()).ToArray();
        await Wait.UntilAsync(() => handler.Calls.Count == 4, "the blocked batch starts");
        using var cts = new CancellationTokenSource();
        var cancelled = processor.ProcessAsync(300, cts.Token).AsTask();
        var queued = Enumerable.Range(301, 3).Select(i => processor.ProcessAsync(i).AsTask()).ToArray();
        var rejected = new[] { processor.ProcessAsync(400).AsTask(), processor.ProcessAsync(401).AsTask() };
        recorder.Observe();
        Assert.Equal(4, recorder.Values("batching.queue.depth").Last());
        Assert.Equal(1, recorder.Values("batching.batches.in_flight").Last());
        cts.Cancel();
        handler.Release(gate);
        await Task.WhenAll(blocked.Concat(queued)).WithinBoundAsync();
        await processor.DisposeAsync();

        Assert.Equal(8 + 4 + 3, recorder.Sum("batching.requests", BatchingTelemetry.RequestOutcomeTag, "completed"));
        Assert.Equal(4, recorder.Sum("batching.requests", BatchingTelemetry.RequestOutcomeTag, "failed"));
        Assert.Equal(1, recorder.Sum("batching.requests", BatchingTelemetry.RequestOutcomeTag, "cancelled"));
        Assert.Equal(2, recorder.Sum("batching.requests", BatchingTelemetry.RequestOutcomeTag, "rejected"));
        Assert.Equal([4, 4, 4, 4, 3], recorder.Values("batching.batch.size"));
        Assert.Equal(5, recorder.Values("batching.batch.duration").Length);
        Assert.Equal(1, recorder.Measurements.Count(m => m.Name == "batching.batch.duration" && Equals(m.Tags[BatchingTelemetry.BatchOutcomeTag], "failure")));
        Assert.Equal(19, recorder.Values("batching.queue.wait").Length);
        Assert.All(recorder.Values("batching.queue.wait"), w => Assert.InRange(w, 0, 10));
        Assert.All(recorder.Measurements.Where(m => m.Name == "batching.batch.size"), m => Assert.Equal("deadline", m.Tags[BatchingTelemetry.PolicyTag]));
    }

    [Fact]
    public async Task Queue_wait_is_measured_from_arrival_on_the_processor_clock()
    {
        string name = $"wait-{Guid.NewGuid():N}";
        using var recorder = new Recorder(name);
        var time = new FakeTimeProvider();
        var processor = BatchProcessor.Create(new RecordingHandler(time).Handler, new BatchingOptions { Name = name, MaxDelay = TimeSpan.FromMilliseconds(8), TimeProvider = time, FlushPolicy = FlushPolicy.Deadline });
        var call = processor.ProcessAsync(1);
        await Wait.UntilIdleAsync(processor);
        time.Advance(TimeSpan.FromMilliseconds(8));
        await call.WithinBoundAsync();
        await processor.DisposeAsync();

        Assert.Equal(0.008, Assert.Single(recorder.Values("batching.queue.wait")), 6);
    }

    [Fact]
    public async Task Each_batch_is_one_activity_linked_to_its_callers_activities()
    {
        var stopped = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name is BatchingTelemetry.ActivitySourceName or "Tests",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { lock (stopped) { stopped.Add(a); } },
        };
        ActivitySource.AddActivityListener(listener);
        using var tests = new ActivitySource("Tests");
        string name = $"trace-{Guid.NewGuid():N}";
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { Name = name, MaxBatchSize = 3, MaxDelay = TimeSpan.FromSeconds(5), FlushPolicy = FlushPolicy.Deadline });

        var callers = new List<ActivityContext>();
        var calls = new List<Task<int>>();
        for (int i = 0; i < 3; i++)
        {
            using Activity request = tests.StartActivity($"request {i}")!;
            callers.Add(request.Context);
            calls.Add(processor.ProcessAsync(i).AsTask());
        }

        await Task.WhenAll(calls).WithinBoundAsync();
        await Wait.UntilAsync(() => { lock (stopped) { return stopped.Any(a => a.OperationName == "batching.batch"); } }, "the batch activity stops");

        Activity batch;
        lock (stopped)
        {
            batch = stopped.Single(a => a.OperationName == "batching.batch" && Equals(a.GetTagItem(BatchingTelemetry.ProcessorTag), name));
        }

        Assert.Equal(3, batch.GetTagItem("batching.batch.size"));
        Assert.Equal("success", batch.GetTagItem(BatchingTelemetry.BatchOutcomeTag));
        Assert.Equal("deadline", batch.GetTagItem(BatchingTelemetry.PolicyTag));
        Assert.Equal(callers.Select(c => c.SpanId), batch.Links.Select(l => l.Context.SpanId));
    }

    [Fact]
    public async Task Start_up_failures_and_shutdown_are_logged()
    {
        var logs = new FakeLogCollector();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(new FakeLoggerProvider(logs)));
        var services = new ServiceCollection().AddSingleton(loggerFactory);
        services.AddBatching().AddKeyedProcessor<int, int>("logged", (_, _, _) => throw new InvalidOperationException("boom"), o => o.MaxDelay = TimeSpan.Zero);
        var provider = services.BuildServiceProvider();
        var processor = provider.GetRequiredKeyedService<IBatchProcessor<int, int>>("logged");

        await Assert.ThrowsAsync<BatchExecutionException>(() => processor.ProcessAsync(1).AsTask().WaitAsync(Wait.Bound));
        await provider.DisposeAsync();

        var messages = logs.GetSnapshot();
        Assert.Contains(messages, m => m.Level == LogLevel.Information && m.Message.Contains("'logged' started: policy adaptive, MaxBatchSize 100", StringComparison.Ordinal));
        var failure = Assert.Single(messages, m => m.Level == LogLevel.Warning);
        Assert.IsType<InvalidOperationException>(failure.Exception);
        Assert.Contains(messages, m => m.Message.Contains("'logged' is shutting down", StringComparison.Ordinal));
        Assert.Contains(messages, m => m.Message.Contains("'logged' stopped after draining", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_health_check_reports_degraded_near_capacity_and_unhealthy_when_disposed()
    {
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        var services = new ServiceCollection();
        services.AddBatching()
            .AddKeyedProcessor<int, int>("busy", handler.Handler, o => { o.MaxBatchSize = 1; o.QueueCapacity = 10; o.MaxDelay = TimeSpan.Zero; })
            .AddProcessor<int, int>(new RecordingHandler().Handler);
        await using var provider = services.BuildServiceProvider();
        var check = provider.GetRequiredService<BatchingHealthCheck>();
        var busy = provider.GetRequiredKeyedService<IBatchProcessor<int, int>>("busy");

        Assert.Equal(HealthStatus.Healthy, (await check.CheckHealthAsync(new HealthCheckContext())).Status);

        var calls = Enumerable.Range(0, 10).Select(i => busy.ProcessAsync(i).AsTask()).ToArray();
        await handler.Started.WaitAsync(Wait.Bound);
        HealthCheckResult degraded = await check.CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Degraded, degraded.Status);
        Assert.Contains("near capacity", degraded.Description, StringComparison.Ordinal);
        Assert.Equal(2, degraded.Data.Count);

        handler.Release(gate);
        await Task.WhenAll(calls).WithinBoundAsync();
        await busy.DisposeAsync();
        HealthCheckResult unhealthy = await check.CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Unhealthy, unhealthy.Status);
        Assert.Contains("'busy' is disposed", unhealthy.Description, StringComparison.Ordinal);
    }
}
