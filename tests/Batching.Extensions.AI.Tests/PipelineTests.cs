using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using static Batching.Extensions.AI.Tests.TestSupport;

namespace Batching.Extensions.AI.Tests;

public sealed class PipelineTests
{
    [Fact]
    public async Task AddEmbeddingGenerator_UseBatching_resolves_from_the_container_and_joins_the_health_check()
    {
        var inner = new RecordingGenerator();
        var services = new ServiceCollection();
        services.AddSingleton(typeof(Microsoft.Extensions.Logging.ILogger<>), typeof(Microsoft.Extensions.Logging.Abstractions.NullLogger<>));
        services.AddEmbeddingGenerator(inner).UseBatching(o => o.MaxBatchSize = 64);
        services.AddSingleton<IBatchingHealthContributor>(sp =>
            sp.GetRequiredService<IEmbeddingGenerator<string, Embedding<float>>>().GetRequiredService<IBatchingHealthContributor>());
        services.AddHealthChecks().AddCheck<BatchingHealthCheck>("batching");
        await using (ServiceProvider provider = services.BuildServiceProvider())
        {
            var generator = provider.GetRequiredService<IEmbeddingGenerator<string, Embedding<float>>>();
            AssertEmbeddings(["a", "b"], await generator.GenerateAsync(["a", "b"]).WaitAsync(Patience));
            HealthReport report = await provider.GetRequiredService<HealthCheckService>().CheckHealthAsync().WaitAsync(Patience);
            Assert.Equal(HealthStatus.Healthy, report.Status);
            Assert.Contains("fake/fake-model", report.Entries["batching"].Data.Keys);
        }

        // Disposing the container drains the processors and disposes the inner generator.
        Assert.True(inner.Disposed);
    }

    [Fact]
    public async Task With_UseOpenTelemetry_outside_each_batch_activity_links_to_the_spans_of_the_callers_it_carried()
    {
        var activities = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name is BatchingTelemetry.ActivitySourceName or "test-otel",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activities.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);

        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = new EmbeddingGeneratorBuilder<string, Embedding<float>>(inner)
            .UseOpenTelemetry(sourceName: "test-otel")
            // A name no other test uses: the listener sees every batch activity in the process, and tests run in parallel.
            .UseBatching(o => o.Name = "otel-links")
            .Build();
        inner.Hold();
        Task<GeneratedEmbeddings<Embedding<float>>> first = generator.GenerateAsync(["first"]);
        await inner.Entered.WaitAsync(Patience);
        Task<GeneratedEmbeddings<Embedding<float>>> x = generator.GenerateAsync(["x"]);
        Task<GeneratedEmbeddings<Embedding<float>>> y = generator.GenerateAsync(["y"]);
        await WaitQueuedAsync(generator, 2);
        inner.Release();
        await Task.WhenAll(first, x, y).WaitAsync(Patience);

        Activity[] callerSpans = [.. activities.Where(a => a.Source.Name == "test-otel")];
        Activity[] batches = [.. activities.Where(a => a.Source.Name == BatchingTelemetry.ActivitySourceName && a.Tags.Any(t => t.Value == "otel-links"))];
        Assert.Equal(3, callerSpans.Length);
        Assert.Equal(2, batches.Length);
        Activity shared = Assert.Single(batches, b => b.Links.Count() == 2);
        Assert.Equal(2, callerSpans.Count(s => shared.Links.Any(l => l.Context.SpanId == s.SpanId)));
    }
}
