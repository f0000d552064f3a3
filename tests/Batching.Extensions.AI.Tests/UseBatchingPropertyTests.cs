using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Microsoft.Extensions.AI;
using static Batching.Extensions.AI.Tests.TestSupport;

namespace Batching.Extensions.AI.Tests;

/// <summary>One caller: how many values, which of the option sets, whether one value is poison, cancelled before the call.</summary>
public sealed record CallerPlan(int Values, int OptionSet, int PoisonAt, bool PreCancelled);

/// <summary>Random concurrent callers against one batching generator.</summary>
public sealed record EmbeddingWorkload(int MaxBatchSize, int MaxConcurrentBatches, bool Isolate, CallerPlan[] Callers)
{
    public override string ToString() =>
        $"MaxBatchSize={MaxBatchSize} MaxConcurrentBatches={MaxConcurrentBatches} Isolate={Isolate} Callers=[{string.Join(" ", Callers.Select(c => $"{c.Values}@{c.OptionSet}{(c.PoisonAt >= 0 ? $"!{c.PoisonAt}" : "")}{(c.PreCancelled ? "x" : "")}"))}]";
}

public static class EmbeddingArbitraries
{
    public static Arbitrary<EmbeddingWorkload> Workloads()
    {
        Gen<CallerPlan> caller =
            from values in Gen.Choose(1, 5)
            from set in Gen.Choose(0, OptionSets.Length - 1)
            from poison in Gen.Frequency((1, Gen.Choose(0, values - 1)), (12, Gen.Constant(-1)))
            from cancelled in Gen.Frequency((1, Gen.Constant(true)), (15, Gen.Constant(false)))
            select new CallerPlan(values, set, poison, cancelled);
        Gen<EmbeddingWorkload> workload =
            from maxBatch in Gen.Choose(1, 8)
            from concurrent in Gen.Choose(1, 3)
            from isolate in Gen.Elements(true, false)
            from count in Gen.Choose(1, 40)
            from callers in Gen.ArrayOf(caller, count)
            select new EmbeddingWorkload(maxBatch, concurrent, isolate, callers);
        return workload.ToArbitrary();
    }

    internal static readonly Func<EmbeddingGenerationOptions?>[] OptionSets =
    [
        () => null,
        () => new EmbeddingGenerationOptions { ModelId = "a" },
        () => new EmbeddingGenerationOptions { ModelId = "a", Dimensions = 2 },
        () => new EmbeddingGenerationOptions { AdditionalProperties = new() { ["user"] = "u" } },
    ];
}

public sealed class UseBatchingPropertyTests
{
    [Property(Arbitrary = [typeof(EmbeddingArbitraries)], MaxTest = 60)]
    public async Task Every_caller_gets_its_own_embeddings_and_inner_calls_respect_size_and_options(EmbeddingWorkload workload)
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner, o =>
        {
            o.MaxBatchSize = workload.MaxBatchSize;
            o.MaxConcurrentBatches = workload.MaxConcurrentBatches;
            // Depth 3 isolates single values in batches of up to 8.
            o.PoisonIsolationDepth = workload.Isolate ? 3 : 0;
        });

        string[][] values = [.. workload.Callers.Select((c, i) => Enumerable.Range(0, c.Values)
            .Select(j => j == c.PoisonAt ? $"poison{i}.{j}" : $"c{i}.{j}{new string('x', j)}").ToArray())];
        var setOf = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < values.Length; i++)
        {
            foreach (string v in values[i])
            {
                setOf[v] = workload.Callers[i].OptionSet;
            }
        }

        Task<GeneratedEmbeddings<Embedding<float>>>[] calls = [.. workload.Callers.Select((c, i) => Task.Run(() => generator.GenerateAsync(
            values[i], EmbeddingArbitraries.OptionSets[c.OptionSet](), new CancellationToken(c.PreCancelled))))];
        await Task.WhenAll(calls).WaitAsync(Patience).ContinueWith(_ => { }, TaskScheduler.Default);

        IReadOnlyList<InnerCall> innerCalls = inner.Calls;
        foreach (InnerCall call in innerCalls)
        {
            Assert.InRange(call.Values.Length, 1, workload.MaxBatchSize);
            int set = Assert.Single(call.Values.Select(v => setOf[v]).Distinct());
            Assert.Equal(EmbeddingArbitraries.OptionSets[set]()?.ModelId, call.Options?.ModelId);
            Assert.Equal(EmbeddingArbitraries.OptionSets[set]()?.Dimensions, call.Options?.Dimensions);
        }

        var failedValues = innerCalls.Where(c => c.Values.Any(v => v.StartsWith("poison", StringComparison.Ordinal)))
            .SelectMany(c => c.Values).ToHashSet(StringComparer.Ordinal);
        for (int i = 0; i < calls.Length; i++)
        {
            CallerPlan plan = workload.Callers[i];
            if (plan.PreCancelled)
            {
                Assert.True(calls[i].IsCanceled, $"caller {i} was cancelled before it called");
                Assert.DoesNotContain(innerCalls.SelectMany(c => c.Values), v => values[i].Contains(v));
                continue;
            }

            bool shouldFail = workload.Isolate ? plan.PoisonAt >= 0 : values[i].Any(failedValues.Contains);
            if (!shouldFail)
            {
                AssertEmbeddings(values[i], await calls[i]);
                continue;
            }

            BatchExecutionException error = await Assert.ThrowsAsync<BatchExecutionException>(() => calls[i]);
            if (workload.Isolate)
            {
                BatchItemFailure failure = Assert.Single(error.ItemFailures);
                Assert.Equal((plan.PoisonAt, 1), (failure.StartIndex, failure.Count));
            }
        }

        if (!workload.Isolate)
        {
            // Without isolation every value that was not cancelled reached the inner generator exactly once.
            Assert.Equal(values.Where((_, i) => !workload.Callers[i].PreCancelled).SelectMany(v => v).Order(StringComparer.Ordinal),
                innerCalls.SelectMany(c => c.Values).Order(StringComparer.Ordinal));
        }

        if (workload.Callers.All(c => c.PoisonAt < 0 && !c.PreCancelled))
        {
            // Usage shares add up exactly to what the inner generator reported.
            GeneratedEmbeddings<Embedding<float>>[] results = [.. calls.Select(c => c.Result)];
            Assert.Equal(values.Sum(v => v.Sum(s => (long)s.Length)), results.Sum(r => r.Usage!.InputTokenCount!.Value));
            Assert.Equal(innerCalls.Count, results.Sum(r => r.Usage!.AdditionalCounts?.GetValueOrDefault("calls") ?? 0));
        }
    }
}
