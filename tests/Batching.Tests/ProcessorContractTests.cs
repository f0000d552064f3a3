using System.Collections.Concurrent;
using Batching.Tests.TestSupport;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests;

/// <summary>One item a producer submits: cancelled before submission, at some moment after it, or never; poison or not.</summary>
public sealed record ItemPlan(bool PreCancelled, int CancelAfterYields, bool Poison, int YieldsBefore);

/// <summary>A random concurrent workload against one processor.</summary>
public sealed record Workload(int MaxBatchSize, int MaxConcurrentBatches, int Producers, int IsolationDepth, bool AsyncHandler, ItemPlan[] Items)
{
    public override string ToString() =>
        $"MaxBatchSize={MaxBatchSize} MaxConcurrentBatches={MaxConcurrentBatches} Producers={Producers} IsolationDepth={IsolationDepth} AsyncHandler={AsyncHandler} Items={Items.Length} " +
        $"(pre-cancelled {Items.Count(i => i.PreCancelled)}, cancelled later {Items.Count(i => i.CancelAfterYields >= 0)}, poison {Items.Count(i => i.Poison)})";
}

/// <summary>Arrivals on fake time: the gap in 100 µs steps before each item.</summary>
public sealed record ArrivalSchedule(int MaxBatchSize, int MaxDelaySteps, int[] Gaps)
{
    public override string ToString() => $"MaxBatchSize={MaxBatchSize} MaxDelaySteps={MaxDelaySteps} Gaps=[{string.Join(",", Gaps)}]";
}

public static class Arbitraries
{
    public static Arbitrary<Workload> Workloads()
    {
        Gen<ItemPlan> item =
            from preCancelled in Gen.Frequency((1, Gen.Constant(true)), (19, Gen.Constant(false)))
            from cancelLater in Gen.Frequency((1, Gen.Choose(0, 20)), (4, Gen.Constant(-1)))
            from poison in Gen.Frequency((1, Gen.Constant(true)), (30, Gen.Constant(false)))
            from yields in Gen.Frequency((3, Gen.Constant(0)), (1, Gen.Choose(1, 3)))
            select new ItemPlan(preCancelled, cancelLater, poison, yields);
        Gen<Workload> workload =
            from maxBatch in Gen.Choose(1, 16)
            from maxConcurrent in Gen.Choose(1, 3)
            from producers in Gen.Choose(1, 8)
            from depth in Gen.Elements(0, 0, 5)
            from asyncHandler in Gen.Elements(true, false)
            from count in Gen.Choose(1, 150)
            from items in Gen.ArrayOf(item, count)
            select new Workload(maxBatch, maxConcurrent, producers, depth, asyncHandler, items);
        return workload.ToArbitrary();
    }

    public static Arbitrary<ArrivalSchedule> Schedules()
    {
        Gen<ArrivalSchedule> schedule =
            from maxBatch in Gen.Choose(1, 6)
            from maxDelay in Gen.Choose(0, 4)
            from count in Gen.Choose(1, 25)
            from gaps in Gen.ArrayOf(Gen.Frequency((3, Gen.Constant(0)), (2, Gen.Choose(1, 5))), count)
            select new ArrivalSchedule(maxBatch, maxDelay, gaps);
        return schedule.ToArbitrary();
    }
}

/// <summary>
/// The contract every flush policy must keep, checked over random workloads: each subclass runs the same
/// properties against one policy.
/// </summary>
public abstract class ProcessorContractTests
{
    protected abstract FlushPolicy PolicyFor(int maxBatchSize);

    [Property(Arbitrary = [typeof(Arbitraries)], MaxTest = 40)]
    public async Task Every_caller_completes_exactly_once_with_its_own_output(Workload workload)
    {
        var handler = new ConcurrencyCheckingHandler(workload);
        var options = new BatchingOptions
        {
            MaxBatchSize = workload.MaxBatchSize,
            MaxConcurrentBatches = workload.MaxConcurrentBatches,
            MaxDelay = TimeSpan.FromMilliseconds(1),
            PoisonIsolationDepth = workload.IsolationDepth,
            FlushPolicy = PolicyFor(workload.MaxBatchSize),
        };
        var processor = BatchProcessor.Create<int, int>(handler.HandleAsync, options);
        var calls = new Task<int>[workload.Items.Length];
        var sources = new CancellationTokenSource[workload.Items.Length];
        var cancellations = new List<Task>();

        var producers = Enumerable.Range(0, workload.Producers).Select(p => Task.Run(async () =>
        {
            for (int i = p; i < workload.Items.Length; i += workload.Producers)
            {
                ItemPlan plan = workload.Items[i];
                for (int y = 0; y < plan.YieldsBefore; y++)
                {
                    await Task.Yield();
                }

                sources[i] = new CancellationTokenSource();
                if (plan.PreCancelled)
                {
                    sources[i].Cancel();
                }

                calls[i] = processor.ProcessAsync(i, sources[i].Token).AsTask();
                if (plan.CancelAfterYields >= 0)
                {
                    var source = sources[i];
                    lock (cancellations)
                    {
                        cancellations.Add(Task.Run(async () =>
                        {
                            for (int y = 0; y < plan.CancelAfterYields; y++)
                            {
                                await Task.Yield();
                            }

                            source.Cancel();
                        }));
                    }
                }
            }
        })).ToArray();

        await Task.WhenAll(producers).WithinBoundAsync();
        await Task.WhenAll(calls.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default))).WithinBoundAsync();
        await Task.WhenAll(cancellations).WithinBoundAsync();
        await processor.DisposeAsync().AsTask().WithinBoundAsync();

        bool fullIsolation = workload.IsolationDepth >= 4; // 2^4 >= MaxBatchSize 16
        var firstCallOf = handler.FirstCallContaining();
        for (int i = 0; i < calls.Length; i++)
        {
            ItemPlan plan = workload.Items[i];
            Task<int> call = calls[i];
            string where = $"item {i} ({plan}) in {workload}";
            if (plan.PreCancelled)
            {
                Assert.True(call.IsCanceled, where);
                Assert.False(firstCallOf.ContainsKey(i), $"pre-cancelled item reached the handler: {where}");
                continue;
            }

            if (call.IsCompletedSuccessfully)
            {
                Assert.True(RecordingHandler.Expected(i) == call.Result, $"wrong output {call.Result}: {where}");
                Assert.False(plan.Poison, $"poison input succeeded: {where}");
                continue;
            }

            if (call.IsCanceled)
            {
                Assert.True(plan.CancelAfterYields >= 0, $"cancelled without being asked: {where}");
                continue;
            }

            var error = call.Exception!.InnerException;
            Assert.True(error is BatchExecutionException, $"unexpected {error}: {where}");
            Assert.True(firstCallOf.TryGetValue(i, out int[]? batch), $"failed without reaching the handler: {where}");
            if (fullIsolation)
            {
                Assert.True(plan.Poison, $"a healthy input failed despite full isolation: {where}");
            }
            else
            {
                Assert.True(batch!.Any(x => workload.Items[x].Poison), $"failed in a batch without poison: {where}");
            }
        }

        Assert.True(handler.Violation is null, handler.Violation);
    }

    [Property(Arbitrary = [typeof(Arbitraries)], MaxTest = 25)]
    public async Task No_item_waits_longer_than_MaxDelay_on_fake_time(ArrivalSchedule schedule)
    {
        var step = TimeSpan.FromMicroseconds(100);
        var time = new FakeTimeProvider();
        var handler = new RecordingHandler(time);
        var maxDelay = step * schedule.MaxDelaySteps;
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = schedule.MaxBatchSize,
            MaxDelay = maxDelay,
            FlushPolicy = PolicyFor(schedule.MaxBatchSize),
            TimeProvider = time,
            ExecutionTimeout = Timeout.InfiniteTimeSpan,
        });
        var arrivals = new Dictionary<int, DateTimeOffset>();
        var calls = new List<Task<int>>();
        for (int i = 0; i < schedule.Gaps.Length; i++)
        {
            for (int s = 0; s < schedule.Gaps[i]; s++)
            {
                time.Advance(step);
                await Wait.UntilIdleAsync(processor);
            }

            arrivals[i] = time.GetUtcNow();
            calls.Add(processor.ProcessAsync(i).AsTask());
            await Wait.UntilIdleAsync(processor);
        }

        for (int s = 0; s < schedule.MaxDelaySteps; s++)
        {
            time.Advance(step);
            await Wait.UntilIdleAsync(processor);
        }

        int[] results = await Task.WhenAll(calls).WithinBoundAsync();
        await processor.DisposeAsync();

        Assert.Equal(Enumerable.Range(0, calls.Count).Select(RecordingHandler.Expected), results);
        foreach (BatchCall call in handler.Calls)
        {
            Assert.InRange(call.Inputs.Length, 1, schedule.MaxBatchSize);
            foreach (int input in call.Inputs)
            {
                TimeSpan waited = call.StartedAt - arrivals[input];
                Assert.True(waited <= maxDelay, $"item {input} waited {waited} > MaxDelay {maxDelay} ({schedule})");
            }
        }
    }

    /// <summary>Computes x * 2 + 1, fails whole calls that contain poison, and records bound violations instead of throwing into the engine.</summary>
    private sealed class ConcurrencyCheckingHandler(Workload workload)
    {
        private readonly ConcurrentQueue<int[]> _calls = new();
        private int _running;

        public string? Violation { get; private set; }

        public Dictionary<int, int[]> FirstCallContaining()
        {
            var first = new Dictionary<int, int[]>();
            foreach (int[] call in _calls)
            {
                foreach (int input in call)
                {
                    first.TryAdd(input, call);
                }
            }

            return first;
        }

        public async ValueTask HandleAsync(ReadOnlyMemory<int> inputs, Memory<int> outputs, CancellationToken token)
        {
            int running = Interlocked.Increment(ref _running);
            try
            {
                if (running > workload.MaxConcurrentBatches)
                {
                    Violation = $"{running} batches ran at once (MaxConcurrentBatches {workload.MaxConcurrentBatches})";
                }

                if (inputs.Length < 1 || inputs.Length > workload.MaxBatchSize || outputs.Length != inputs.Length)
                {
                    Violation = $"batch of {inputs.Length} inputs / {outputs.Length} outputs (MaxBatchSize {workload.MaxBatchSize})";
                }

                int[] batch = inputs.ToArray();
                _calls.Enqueue(batch);
                if (workload.AsyncHandler)
                {
                    await Task.Yield();
                }

                if (batch.Any(x => workload.Items[x].Poison))
                {
                    throw new InvalidOperationException("poison");
                }

                for (int i = 0; i < batch.Length; i++)
                {
                    outputs.Span[i] = RecordingHandler.Expected(batch[i]);
                }
            }
            finally
            {
                Interlocked.Decrement(ref _running);
            }
        }
    }
}

public sealed class DeadlinePolicyContractTests : ProcessorContractTests
{
    protected override FlushPolicy PolicyFor(int maxBatchSize) => FlushPolicy.Deadline;
}

public sealed class SizePolicyContractTests : ProcessorContractTests
{
    protected override FlushPolicy PolicyFor(int maxBatchSize) => FlushPolicy.Size([.. new[] { 2, 4 }.Where(s => s <= maxBatchSize)]);
}

public sealed class AdaptivePolicyContractTests : ProcessorContractTests
{
    protected override FlushPolicy PolicyFor(int maxBatchSize) => FlushPolicy.Adaptive();
}
