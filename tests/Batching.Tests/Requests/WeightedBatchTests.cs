using System.Collections.Concurrent;
using Batching.Tests.TestSupport;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace Batching.Tests.Requests;

/// <summary>Random calls (single or multi-item, of random weights) against a processor bounded by size and weight.</summary>
public sealed record WeightedWorkload(int MaxBatchSize, int MaxBatchWeight, int Slots, int[][] Calls)
{
    public override string ToString() =>
        $"MaxBatchSize={MaxBatchSize} MaxBatchWeight={MaxBatchWeight} Slots={Slots} Calls={Calls.Length} Items={Calls.Sum(c => c.Length)}";
}

public static class WeightedArbitraries
{
    public static Arbitrary<WeightedWorkload> Workloads()
    {
        Gen<WeightedWorkload> workload =
            from size in Gen.Choose(1, 10)
            from maxWeight in Gen.Choose(1, 40)
            from slots in Gen.Choose(1, 3)
            from count in Gen.Choose(1, 60)
            from calls in Gen.ArrayOf(Gen.Choose(1, 12).SelectMany(k => Gen.ArrayOf(Gen.Choose(0, maxWeight), k)), count)
            select new WeightedWorkload(size, maxWeight, slots, calls);
        return workload.ToArbitrary();
    }
}

public class WeightedBatchTests
{
    // An input encodes its weight (low 8 bits) and a unique id.
    private static int Item(int id, int weight) => id << 8 | weight;

    private static int WeightOf(int input) => input & 0xFF;

    [Property(Arbitrary = [typeof(WeightedArbitraries)], MaxTest = 40)]
    public async Task No_batch_exceeds_MaxBatchWeight_or_MaxBatchSize_and_every_item_runs_once(WeightedWorkload workload)
    {
        var batches = new ConcurrentQueue<int[]>();
        await using var processor = BatchProcessor.Create<int, int>(async (inputs, outputs, _) =>
        {
            batches.Enqueue(inputs.ToArray());
            await Task.Yield();
            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = inputs.Span[i] + 1;
            }
        }, new BatchingOptions
        {
            MaxBatchSize = workload.MaxBatchSize,
            MaxConcurrentBatches = workload.Slots,
            ItemWeight = (int x) => WeightOf(x),
            MaxBatchWeight = workload.MaxBatchWeight,
        });

        int id = 0;
        var calls = new List<Task>();
        var expectations = new List<(int[] Inputs, int[] Outputs)>();
        foreach (int[] weights in workload.Calls)
        {
            int[] inputs = [.. weights.Select(w => Item(id++, w))];
            if (inputs.Length == 1)
            {
                calls.Add(processor.ProcessAsync(inputs[0]).AsTask().ContinueWith(t => Assert.Equal(inputs[0] + 1, t.Result), TaskScheduler.Default));
            }
            else
            {
                var outputs = new int[inputs.Length];
                expectations.Add((inputs, outputs));
                calls.Add(processor.ProcessManyAsync(inputs, outputs).AsTask());
            }
        }

        await Task.WhenAll(calls).WithinBoundAsync();
        foreach ((int[] inputs, int[] outputs) in expectations)
        {
            Assert.Equal(inputs.Select(x => x + 1), outputs);
        }

        Assert.All(batches, b =>
        {
            Assert.InRange(b.Length, 1, workload.MaxBatchSize);
            Assert.True(b.Sum(WeightOf) <= workload.MaxBatchWeight, $"a batch weighs {b.Sum(WeightOf)}: {workload}");
        });
        int[] all = [.. batches.SelectMany(b => b)];
        Assert.Equal(id, all.Length);
        Assert.Equal(id, all.Distinct().Count());
    }

    [Fact]
    public async Task Batches_fill_up_to_the_weight_budget_in_order()
    {
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 100,
            ItemWeight = (int x) => x,
            MaxBatchWeight = 10,
        });
        Task<int> first = processor.ProcessAsync(0).AsTask();
        await handler.Started.WaitAsync(Wait.Bound);

        int[] weights = [4, 4, 3, 9, 1, 1, 8, 2];
        var outputs = new int[weights.Length];
        Task call = processor.ProcessManyAsync(weights, outputs).AsTask();
        handler.Release(gate);
        await call.WithinBoundAsync();
        await first;

        Assert.Equal([[4, 4], [3], [9, 1], [1, 8], [2]], handler.Calls.Skip(1).Select(c => c.Inputs).ToArray());
    }

    [Fact]
    public async Task An_item_heavier_than_MaxBatchWeight_fails_its_caller_only()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { ItemWeight = (int x) => x, MaxBatchWeight = 10 });

        ValueTask<int> heavy = processor.ProcessAsync(11);
        ValueTask heavyInMany = processor.ProcessManyAsync(new[] { 1, 2, 30, 4 }, new int[4]);

        var error = await Assert.ThrowsAsync<ArgumentException>(() => heavy.AsTask());
        Assert.Equal("input", error.ParamName);
        Assert.Contains("weighs 11, more than BatchingOptions.MaxBatchWeight (10)", error.Message, StringComparison.Ordinal);
        var manyError = await Assert.ThrowsAsync<ArgumentException>(() => heavyInMany.AsTask());
        Assert.Equal("inputs[2]", manyError.ParamName);
        Assert.Equal(21, await processor.ProcessAsync(10).WithinBoundAsync());
        Assert.Equal([10], handler.AllInputs);
    }

    [Fact]
    public async Task A_weight_function_that_throws_or_returns_a_negative_weight_fails_that_call_only()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            ItemWeight = (int x) => x == 13 ? throw new FormatException("unlucky") : x - 5,
            MaxBatchWeight = 100,
        });

        var thrown = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessAsync(13).AsTask());
        Assert.IsType<FormatException>(thrown.InnerException);
        Assert.Contains("ItemWeight threw FormatException", thrown.Message, StringComparison.Ordinal);
        var negative = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessAsync(1).AsTask());
        Assert.Contains("returned -4", negative.Message, StringComparison.Ordinal);
        Assert.Equal(21, await processor.ProcessAsync(10).WithinBoundAsync());
    }

    [Fact]
    public void An_ItemWeight_for_another_input_type_is_refused_when_the_processor_is_built()
    {
        var options = new BatchingOptions { ItemWeight = (string s) => s.Length, MaxBatchWeight = 10 };

        var error = Assert.Throws<ArgumentException>(() => BatchProcessor.Create<int, int>((_, _, _) => ValueTask.CompletedTask, options));

        Assert.Equal("ItemWeight", error.ParamName);
        Assert.Contains("Func<Int32, int>", error.Message, StringComparison.Ordinal);
    }
}
