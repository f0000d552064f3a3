using System.Diagnostics;
using Batching.Tests.Diagnostics;
using Batching.Tests.Reliability;
using Batching.Tests.TestSupport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.Generation;

/// <summary>Telemetry, dependency injection, health and queue timeouts of generation processors.</summary>
[Collection(nameof(TelemetryTests))] // listeners are process-wide
public class GenerationServicesTests
{
    private static async Task<List<int>> ReadAllAsync(IAsyncEnumerable<int> tokens)
    {
        var read = new List<int>();
        await foreach (int token in tokens)
        {
            read.Add(token);
        }

        return read;
    }

    [Fact]
    public async Task Instruments_report_steps_tokens_latencies_and_outcomes_and_one_activity_spans_each_request()
    {
        const string name = "telemetry-generation";
        using var recorder = new TelemetryTests.Recorder(name);
        var activities = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name is BatchingTelemetry.ActivitySourceName or "generation-test",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { lock (activities) { activities.Add(a); } },
        };
        ActivitySource.AddActivityListener(listener);
        var model = new CountingModel();
        using var source = new ActivitySource("generation-test");
        using var parent = source.StartActivity("caller");
        Assert.NotNull(parent);
        await using (var processor = model.Create(new GenerationOptions { Name = name }))
        {
            Assert.Equal(4, (await ReadAllAsync(processor.GenerateAsync((1, 4))).WithinBoundAsync()).Count);
            Assert.Equal(6, (await ReadAllAsync(processor.GenerateAsync((2, 6))).WithinBoundAsync()).Count);
            recorder.Observe();
        }

        Assert.Equal(2, recorder.Sum("batching.generation.requests", BatchingTelemetry.RequestOutcomeTag, "completed"));
        Assert.Equal(10, recorder.Sum("batching.generation.tokens", BatchingTelemetry.RequestOutcomeTag, "completed"));
        Assert.Equal(10, recorder.Sum("batching.generation.step.size"));
        Assert.Equal(2, recorder.Values("batching.generation.time_to_first_token").Length);
        Assert.Equal(8, recorder.Values("batching.generation.inter_token_latency").Length);
        Assert.NotEmpty(recorder.Values("batching.generation.step.duration"));
        Assert.Contains("batching.generation.active_sequences", recorder.Measurements.Select(m => m.Name));
        Activity[] requests = [.. activities.Where(a => a.OperationName == "batching.generation" && Equals(a.GetTagItem(BatchingTelemetry.ProcessorTag), name))];
        Assert.Equal(2, requests.Length);
        Assert.All(requests, a => Assert.Equal(parent!.SpanId, a.ParentSpanId));
        Assert.Same(parent, Activity.Current); // the request's activity never became the caller's current one
    }

    [Fact]
    public async Task A_listener_that_throws_does_not_hurt_callers()
    {
        using ActivityListener listener = HostileInstrumentationTests.AddThrowingActivityListener();
        var model = new CountingModel();
        await using var processor = model.Create();
        Assert.Equal(5, (await ReadAllAsync(processor.GenerateAsync((1, 5))).WithinBoundAsync()).Count);
    }

    [Fact]
    public async Task AddGenerationProcessor_registers_keyed_and_unkeyed_processors_with_named_options_and_health()
    {
        var model = new CountingModel();
        var services = new ServiceCollection();
        services.AddBatching()
            .AddGenerationProcessor<(int Id, int Length), CountingState, int>(CountingModel.Start, model.Step, o => o.MaxSequences = 3)
            .AddKeyedGenerationProcessor<(int Id, int Length), CountingState, int>("other", CountingModel.Start, model.Step);
        services.Configure<GenerationOptions>("other", o => o.QueueCapacity = 7);
        await using var provider = services.BuildServiceProvider();
        var unkeyed = provider.GetRequiredService<IGenerationProcessor<(int Id, int Length), int>>();
        var keyed = provider.GetRequiredKeyedService<IGenerationProcessor<(int Id, int Length), int>>("other");
        Assert.NotSame(unkeyed, keyed);
        Assert.Equal(3, unkeyed.GetLoad().MaxSequences);
        Assert.Equal(7, keyed.GetLoad().QueueCapacity);
        Assert.Equal(3, (await ReadAllAsync(keyed.GenerateAsync((1, 3))).WithinBoundAsync()).Count);
        var health = await new BatchingHealthCheck(provider.GetServices<IBatchingHealthContributor>()).CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Healthy, health.Status);
        Assert.Contains("other", health.Data.Keys);
    }

    [Fact]
    public void Invalid_options_in_the_container_fail_when_the_processor_is_resolved()
    {
        var model = new CountingModel();
        var services = new ServiceCollection();
        services.AddBatching().AddGenerationProcessor<(int Id, int Length), CountingState, int>(CountingModel.Start, model.Step, o => o.MaxBufferedTokens = 0);
        using var provider = services.BuildServiceProvider();
        var error = Assert.Throws<ArgumentException>(() => provider.GetRequiredService<IGenerationProcessor<(int Id, int Length), int>>());
        Assert.Equal(nameof(GenerationOptions.MaxBufferedTokens), error.ParamName);
    }

    [Fact]
    public async Task A_sequence_waiting_past_its_queue_timeout_fails_with_TimeoutException_and_never_runs()
    {
        var time = new FakeTimeProvider();
        var model = new CountingModel();
        using var gate = new ManualResetEventSlim();
        model.BeforeStep = (index, _) =>
        {
            if (index == 0)
            {
                gate.Wait(Wait.Bound);
            }
        };
        await using var processor = model.Create(new GenerationOptions { MaxSequences = 1, TimeProvider = time });
        var running = ReadAllAsync(processor.GenerateAsync((1, 2)));
        await Wait.UntilAsync(() => model.StepsStarted == 1, "the first step runs");
        var waiting = ReadAllAsync(processor.GenerateAsync((2, 2), new RequestOptions { Timeout = TimeSpan.FromSeconds(5) }));
        var patient = ReadAllAsync(processor.GenerateAsync((3, 2)));
        await Wait.UntilAsync(() => processor.GetLoad().QueuedSequences == 2, "both wait");
        time.Advance(TimeSpan.FromSeconds(4));
        Assert.False(waiting.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(2));
        await Assert.ThrowsAsync<TimeoutException>(() => waiting.WithinBoundAsync());
        gate.Set();
        Assert.Equal(2, (await running.WithinBoundAsync()).Count);
        Assert.Equal(2, (await patient.WithinBoundAsync()).Count);
        Assert.DoesNotContain(model.Steps.Values, ids => ids.Contains(2));
    }
}
