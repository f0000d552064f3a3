using Batching.Policies;

namespace Batching.Tests.Policies;

/// <summary>The policies as pure functions of the queue state.</summary>
public class PolicyDecisionTests
{
    private static FlushContext Context(int queued, int inFlight = 0, int maxConcurrent = 1, double ageMs = 0, long arrivals = 0, double elapsedMs = 0) =>
        new(queued, TimeSpan.FromMilliseconds(ageMs), 100, TimeSpan.FromMilliseconds(1), inFlight, maxConcurrent, arrivals, TimeSpan.FromMilliseconds(elapsedMs));

    [Theory]
    [InlineData(1)]
    [InlineData(99)]
    public void Deadline_waits_for_a_full_batch_or_the_deadline(int queued)
    {
        FlushDecision decision = FlushPolicy.Deadline.Decide(Context(queued));
        Assert.False(decision.IsDispatch);
        Assert.Equal(Timeout.InfiniteTimeSpan, decision.MaxWait);
        Assert.Equal(100, decision.WakeWhenQueued);
    }

    [Fact]
    public void Deadline_dispatches_a_full_batch_at_once()
    {
        Assert.Equal(100, FlushPolicy.Deadline.Decide(Context(250)).DispatchCount);
    }

    [Theory]
    [InlineData(10, 0, 32)]
    [InlineData(32, 32, 0)]
    [InlineData(40, 32, 0)]
    [InlineData(63, 32, 0)]
    [InlineData(64, 64, 0)]
    [InlineData(99, 64, 0)]
    [InlineData(100, 100, 0)]
    [InlineData(1000, 100, 0)]
    public void Size_dispatches_the_largest_batch_the_queue_fills(int queued, int dispatched, int wakeAt)
    {
        FlushDecision decision = FlushPolicy.Size(64, 32).Decide(Context(queued));
        Assert.Equal(dispatched, decision.DispatchCount);
        if (wakeAt > 0)
        {
            Assert.Equal(wakeAt, decision.WakeWhenQueued);
        }
    }

    [Fact]
    public void Size_without_preferred_sizes_waits_for_MaxBatchSize()
    {
        FlushDecision decision = FlushPolicy.Size().Decide(Context(50));
        Assert.False(decision.IsDispatch);
        Assert.Equal(100, decision.WakeWhenQueued);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(37)]
    public void Adaptive_dispatches_everything_at_once_when_no_batch_runs(int queued)
    {
        FlushPolicy policy = FlushPolicy.Adaptive().CreateInstance();
        Assert.Equal(queued, policy.Decide(Context(queued)).DispatchCount);
    }

    [Fact]
    public void Adaptive_holds_a_small_batch_only_while_another_runs_and_the_latency_target_allows()
    {
        var policy = (AdaptiveFlushPolicy)FlushPolicy.Adaptive(new AdaptiveFlushOptions { LatencyTarget = TimeSpan.FromMilliseconds(5) }).CreateInstance();
        Teach(policy, fixedMicros: 200, perItemMicros: 2);

        // 200k items/s arriving: 4 items cannot keep pace (4 / 208 µs = 19k/s); n* = λa / (1 - λb) = 40 / 0.6 ≈ 67.
        policy.Decide(Context(1, inFlight: 1, maxConcurrent: 2, arrivals: 0, elapsedMs: 0));
        FlushDecision decision = policy.Decide(Context(4, inFlight: 1, maxConcurrent: 2, arrivals: 200, elapsedMs: 1));

        Assert.False(decision.IsDispatch);
        Assert.InRange(decision.WakeWhenQueued, 60, 70);
        Assert.InRange(decision.MaxWait.TotalMilliseconds, 0.2, 0.4);

        // The same state with no other batch running: the device is idle, so go now.
        Assert.Equal(4, policy.Decide(Context(4, inFlight: 0, maxConcurrent: 2, arrivals: 400, elapsedMs: 2)).DispatchCount);
    }

    [Fact]
    public void Adaptive_does_not_hold_when_waiting_would_break_the_latency_target()
    {
        var policy = (AdaptiveFlushPolicy)FlushPolicy.Adaptive(new AdaptiveFlushOptions { LatencyTarget = TimeSpan.FromMicroseconds(300) }).CreateInstance();
        Teach(policy, fixedMicros: 200, perItemMicros: 2);
        policy.Decide(Context(1, inFlight: 1, maxConcurrent: 2, arrivals: 0, elapsedMs: 0));

        Assert.Equal(4, policy.Decide(Context(4, inFlight: 1, maxConcurrent: 2, arrivals: 200, elapsedMs: 1)).DispatchCount);
    }

    [Fact]
    public void Adaptive_never_holds_before_the_model_is_warm()
    {
        FlushPolicy policy = FlushPolicy.Adaptive().CreateInstance();
        policy.Decide(Context(1, inFlight: 1, maxConcurrent: 2, arrivals: 0, elapsedMs: 0));
        Assert.Equal(4, policy.Decide(Context(4, inFlight: 1, maxConcurrent: 2, arrivals: 200, elapsedMs: 1)).DispatchCount);
    }

    [Fact]
    public void Adaptive_instances_never_share_what_they_learned()
    {
        FlushPolicy shared = FlushPolicy.Adaptive();
        var first = (AdaptiveFlushPolicy)shared.CreateInstance();
        var second = (AdaptiveFlushPolicy)shared.CreateInstance();
        Teach(first, 100, 1);
        Assert.NotSame(first, second);
        Assert.Equal(0, second.Model.Count);
        Assert.Same(FlushPolicy.Deadline, FlushPolicy.Deadline.CreateInstance());
    }

    [Fact]
    public void Cost_model_recovers_a_and_b_from_exact_observations()
    {
        var model = new BatchCostModel(16);
        for (int n = 1; n <= 40; n++)
        {
            model.Add(n, TimeSpan.FromMicroseconds(200 + 2 * n));
        }

        Assert.Equal(16, model.Count);
        Assert.Equal(200e-6, model.FixedSeconds, 1e-9);
        Assert.Equal(2e-6, model.PerItemSeconds, 1e-10);
        Assert.Equal(400e-6, model.PredictSeconds(100), 1e-9);
    }

    [Fact]
    public void Cost_model_with_one_batch_size_attributes_everything_to_the_fixed_cost()
    {
        var model = new BatchCostModel(8);
        for (int i = 0; i < 8; i++)
        {
            model.Add(10, TimeSpan.FromMicroseconds(50));
        }

        Assert.Equal(0, model.PerItemSeconds);
        Assert.Equal(50e-6, model.FixedSeconds, 1e-12);
    }

    private static void Teach(FlushPolicy policy, double fixedMicros, double perItemMicros)
    {
        for (int n = 1; n <= 64; n++)
        {
            policy.OnBatchCompleted(new BatchCompletion(n, TimeSpan.FromMicroseconds(fixedMicros + perItemMicros * n), succeeded: true));
        }
    }
}
