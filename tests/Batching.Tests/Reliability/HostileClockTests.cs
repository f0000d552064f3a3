using Batching.Tests.TestSupport;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.Reliability;

/// <summary>
/// A processor whose dispatcher can no longer run (here: its custom clock starts throwing) fails every caller it holds,
/// refuses new ones, reports Unhealthy, and still disposes cleanly; nothing escapes onto a timer or pool thread.
/// </summary>
public class HostileClockTests
{
    private sealed class BreakingClock : FakeTimeProvider
    {
        public volatile bool Broken;

        public override long GetTimestamp() => Broken ? throw new InvalidOperationException("the clock broke") : base.GetTimestamp();
    }

    [Fact]
    public async Task When_the_dispatcher_dies_the_health_check_says_Unhealthy_and_every_caller_completes()
    {
        var clock = new BreakingClock();
        var handler = new RecordingHandler(clock);
        var processor = (IBatchingHealthContributor)BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 4,
            MaxDelay = TimeSpan.FromSeconds(1),
            FlushPolicy = FlushPolicy.Deadline,
            TimeProvider = clock,
        });
        var batching = (IBatchProcessor<int, int>)processor;
        Assert.Equal(HealthStatus.Healthy, processor.CheckHealth().Status);
        ValueTask<int>[] queued = [batching.ProcessAsync(1), batching.ProcessAsync(2)];
        await Wait.UntilIdleAsync(batching);

        clock.Broken = true;
        clock.Advance(TimeSpan.FromSeconds(1)); // the MaxDelay deadline fires and the dispatcher reads the clock

        foreach (ValueTask<int> call in queued)
        {
            var error = await Assert.ThrowsAsync<ObjectDisposedException>(() => call.AsTask().WaitAsync(Wait.Bound));
            Assert.Contains("the clock broke", error.Message, StringComparison.Ordinal);
        }

        HealthCheckResult health = processor.CheckHealth();
        Assert.Equal(HealthStatus.Unhealthy, health.Status);
        Assert.Contains("dispatcher failed", health.Description, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => batching.ProcessAsync(3).AsTask().WaitAsync(Wait.Bound));
        await batching.DisposeAsync().AsTask().WithinBoundAsync();
        Assert.Empty(handler.Calls);
    }
}
