using Batching.Extensions.AI.Internal;
using Microsoft.Extensions.AI;
using static Batching.Extensions.AI.Tests.TestSupport;

namespace Batching.Extensions.AI.Tests;

public sealed class UseBatchingTests
{
    [Fact]
    public async Task Concurrent_callers_share_inner_calls_and_get_their_own_embeddings_in_order()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner, o => o.MaxBatchSize = 64);
        inner.Hold();
        Task<GeneratedEmbeddings<Embedding<float>>> first = generator.GenerateAsync(["first"]);
        await inner.Entered.WaitAsync(Patience);

        string[][] callers = [["a"], ["bb", "ccc"], ["dddd"], ["e", "ff", "ggg", "hhhh"]];
        Task<GeneratedEmbeddings<Embedding<float>>>[] calls = [.. callers.Select(values => generator.GenerateAsync(values))];
        await WaitQueuedAsync(generator, callers.Sum(c => c.Length));
        inner.Release();

        AssertEmbeddings(["first"], await first.WaitAsync(Patience));
        for (int i = 0; i < callers.Length; i++)
        {
            AssertEmbeddings(callers[i], await calls[i].WaitAsync(Patience));
        }

        // The four callers queued behind the held call went to the inner generator together, in arrival order.
        Assert.Equal(2, inner.Calls.Count);
        Assert.Equal(callers.SelectMany(c => c), inner.Calls[1].Values);
    }

    [Fact]
    public async Task No_inner_call_carries_more_than_MaxBatchSize_values_and_large_calls_are_split_in_order()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner, o => o.MaxBatchSize = 3);
        inner.Hold();
        Task<GeneratedEmbeddings<Embedding<float>>> first = generator.GenerateAsync(["x"]);
        await inner.Entered.WaitAsync(Patience);
        string[] big = [.. Enumerable.Range(0, 10).Select(i => $"big{i}")];
        string[] small = ["s0", "s1"];
        Task<GeneratedEmbeddings<Embedding<float>>> bigCall = generator.GenerateAsync(big);
        Task<GeneratedEmbeddings<Embedding<float>>> smallCall = generator.GenerateAsync(small);
        await WaitQueuedAsync(generator, 12);
        inner.Release();

        AssertEmbeddings(big, await bigCall.WaitAsync(Patience));
        AssertEmbeddings(small, await smallCall.WaitAsync(Patience));
        await first.WaitAsync(Patience);
        Assert.All(inner.Calls, c => Assert.InRange(c.Values.Length, 1, 3));
        Assert.Equal(["x", .. big, .. small], inner.Calls.SelectMany(c => c.Values));
    }

    [Fact]
    public async Task Calls_with_different_options_are_never_mixed_and_equivalent_options_are_batched_together()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        EmbeddingGenerationOptions Props(string user) => new() { AdditionalProperties = new() { ["user"] = user } };
        (string Value, EmbeddingGenerationOptions? Options, string Group)[] callers =
        [
            ("n1", null, "default"),
            ("n2", new EmbeddingGenerationOptions(), "default"),
            ("m1", new() { ModelId = "m" }, "model m"),
            ("m2", new() { ModelId = "m" }, "model m"),
            ("M1", new() { ModelId = "M" }, "model M"),
            ("d1", new() { ModelId = "m", Dimensions = 2 }, "model m, 2 dims"),
            ("u1", Props("alice"), "alice"),
            ("u2", Props("alice"), "alice"),
            ("u3", Props("bob"), "bob"),
        ];

        // One held call per group occupies each partition's only slot, so every caller below is queued.
        inner.Hold();
        (string Value, EmbeddingGenerationOptions? Options, string Group)[] openers =
            [.. callers.DistinctBy(c => c.Group).Select(c => ($"open {c.Group}", c.Options, c.Group))];
        Task<GeneratedEmbeddings<Embedding<float>>>[] opened = [.. openers.Select(c => generator.GenerateAsync([c.Value], c.Options))];
        await WaitCallsAsync(inner, openers.Length);
        Task<GeneratedEmbeddings<Embedding<float>>>[] calls = [.. callers.Select(c => generator.GenerateAsync([c.Value], c.Options))];
        await WaitQueuedAsync(generator, callers.Length);
        inner.Release();
        await Task.WhenAll(opened).WaitAsync(Patience);
        for (int i = 0; i < callers.Length; i++)
        {
            AssertEmbeddings([callers[i].Value], await calls[i].WaitAsync(Patience));
        }

        Dictionary<string, string> group = callers.Concat(openers).ToDictionary(c => c.Value, c => c.Group);
        foreach (InnerCall call in inner.Calls)
        {
            Assert.Single(call.Values.Select(v => group[v]).Distinct());
        }

        // After the openers, one inner call per group: equivalent options (null and empty, equal model ids, equal
        // properties) were coalesced.
        Assert.Equal(6, openers.Length);
        Assert.Equal(6, inner.Calls.Count - openers.Length);
        InnerCall models = Assert.Single(inner.Calls, c => c.Values.Contains("m1"));
        Assert.Equal(["m1", "m2"], models.Values);
        Assert.Equal("m", models.Options?.ModelId);
        Assert.Equal(["n1", "n2"], Assert.Single(inner.Calls, c => c.Values.Contains("n2")).Values);
        Assert.Equal("alice", Assert.Single(inner.Calls, c => c.Values.Contains("u1")).Options?.AdditionalProperties?["user"]);
        Assert.Null(Assert.Single(inner.Calls, c => c.Values.Contains("n2")).Options);
    }

    [Fact]
    public async Task The_inner_call_gets_a_copy_of_the_options_so_a_caller_changing_its_options_later_changes_nothing()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        var options = new EmbeddingGenerationOptions { ModelId = "m" };
        await generator.GenerateAsync(["a"], options).WaitAsync(Patience);
        options.ModelId = "changed";
        await generator.GenerateAsync(["b"], new EmbeddingGenerationOptions { ModelId = "m" }).WaitAsync(Patience);
        Assert.All(inner.Calls, c => Assert.Equal("m", c.Options?.ModelId));
        Assert.NotSame(options, inner.Calls[0].Options);
    }

    [Fact]
    public async Task Cancelling_one_caller_removes_only_its_values()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        inner.Hold();
        Task<GeneratedEmbeddings<Embedding<float>>> first = generator.GenerateAsync(["first"]);
        await inner.Entered.WaitAsync(Patience);
        using var cancel = new CancellationTokenSource();
        Task<GeneratedEmbeddings<Embedding<float>>> before = generator.GenerateAsync(["keep1"]);
        Task<GeneratedEmbeddings<Embedding<float>>> cancelled = generator.GenerateAsync(["drop1", "drop2"], null, cancel.Token);
        Task<GeneratedEmbeddings<Embedding<float>>> after = generator.GenerateAsync(["keep2", "keep3"]);
        await WaitQueuedAsync(generator, 5);

        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(Patience));
        inner.Release();
        AssertEmbeddings(["keep1"], await before.WaitAsync(Patience));
        AssertEmbeddings(["keep2", "keep3"], await after.WaitAsync(Patience));
        await first.WaitAsync(Patience);
        Assert.DoesNotContain(inner.Calls.SelectMany(c => c.Values), v => v.StartsWith("drop", StringComparison.Ordinal));
    }

    [Fact]
    public async Task An_inner_failure_fails_exactly_the_callers_whose_values_were_in_the_failed_call()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner, o => o.MaxBatchSize = 3);
        inner.Hold();
        Task<GeneratedEmbeddings<Embedding<float>>> first = generator.GenerateAsync(["first"]);
        Task<GeneratedEmbeddings<Embedding<float>>> otherFirst = generator.GenerateAsync(["y"], new EmbeddingGenerationOptions { ModelId = "m" });
        await WaitCallsAsync(inner, 2);
        // Batches of 3 in arrival order: [a, poison, b] fails; [c, d, e] and the other partition succeed.
        Task<GeneratedEmbeddings<Embedding<float>>> a = generator.GenerateAsync(["a"]);
        Task<GeneratedEmbeddings<Embedding<float>>> poison = generator.GenerateAsync(["poison"]);
        Task<GeneratedEmbeddings<Embedding<float>>> b = generator.GenerateAsync(["b"]);
        Task<GeneratedEmbeddings<Embedding<float>>> cde = generator.GenerateAsync(["c", "d", "e"]);
        Task<GeneratedEmbeddings<Embedding<float>>> other = generator.GenerateAsync(["z"], new EmbeddingGenerationOptions { ModelId = "m" });
        await WaitQueuedAsync(generator, 7);
        inner.Release();

        await first.WaitAsync(Patience);
        foreach (Task<GeneratedEmbeddings<Embedding<float>>> failed in new[] { a, poison, b })
        {
            BatchExecutionException error = await Assert.ThrowsAsync<BatchExecutionException>(() => failed.WaitAsync(Patience));
            Assert.Contains("inner failed on 'poison'", error.ToString(), StringComparison.Ordinal);
        }

        AssertEmbeddings(["c", "d", "e"], await cde.WaitAsync(Patience));
        AssertEmbeddings(["z"], await other.WaitAsync(Patience));
        AssertEmbeddings(["y"], await otherFirst.WaitAsync(Patience));
    }

    [Fact]
    public async Task With_poison_isolation_only_the_caller_whose_value_fails_alone_fails()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner, o => o.PoisonIsolationDepth = 3);
        inner.Hold();
        Task<GeneratedEmbeddings<Embedding<float>>> first = generator.GenerateAsync(["first"]);
        await inner.Entered.WaitAsync(Patience);
        Task<GeneratedEmbeddings<Embedding<float>>> a = generator.GenerateAsync(["a", "b"]);
        Task<GeneratedEmbeddings<Embedding<float>>> mixed = generator.GenerateAsync(["c", "poison-d"]);
        Task<GeneratedEmbeddings<Embedding<float>>> e = generator.GenerateAsync(["e"]);
        await WaitQueuedAsync(generator, 5);
        inner.Release();

        await first.WaitAsync(Patience);
        AssertEmbeddings(["a", "b"], await a.WaitAsync(Patience));
        AssertEmbeddings(["e"], await e.WaitAsync(Patience));
        BatchExecutionException error = await Assert.ThrowsAsync<BatchExecutionException>(() => mixed.WaitAsync(Patience));
        BatchItemFailure failure = Assert.Single(error.ItemFailures);
        Assert.Equal((1, 1), (failure.StartIndex, failure.Count));
    }

    [Fact]
    public async Task Usage_is_apportioned_by_position_and_adds_up_to_the_inner_totals()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        inner.Hold();
        Task<GeneratedEmbeddings<Embedding<float>>> first = generator.GenerateAsync(["first"]);
        await inner.Entered.WaitAsync(Patience);
        Task<GeneratedEmbeddings<Embedding<float>>> x = generator.GenerateAsync(["a"]);
        Task<GeneratedEmbeddings<Embedding<float>>> y = generator.GenerateAsync(["bb", "cccc"]);
        await WaitQueuedAsync(generator, 3);
        inner.Release();

        Assert.Equal(5, (await first.WaitAsync(Patience)).Usage?.InputTokenCount);
        UsageDetails? one = (await x.WaitAsync(Patience)).Usage;
        UsageDetails? two = (await y.WaitAsync(Patience)).Usage;
        // 7 tokens over 3 values by position: floor(7/3)=2, floor(14/3)-2=2, 7-4=3; 1 call count: 0, 0, 1.
        Assert.Equal(2, one?.InputTokenCount);
        Assert.Equal(5, two?.InputTokenCount);
        Assert.Equal(7, one!.TotalTokenCount + two!.TotalTokenCount);
        Assert.Null(one.OutputTokenCount);
        Assert.Equal(0, one.AdditionalCounts?["calls"]);
        Assert.Equal(1, two.AdditionalCounts?["calls"]);
    }

    [Fact]
    public async Task Usage_is_null_when_the_inner_generator_reports_none()
    {
        var inner = new RecordingGenerator { ReportUsage = false };
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        Assert.Null((await generator.GenerateAsync(["a", "b"]).WaitAsync(Patience)).Usage);
    }

    [Fact]
    public async Task An_inner_result_with_the_wrong_count_fails_its_callers_with_a_clear_error()
    {
        var inner = new RecordingGenerator { WrongCount = 1 };
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        BatchExecutionException error = await Assert.ThrowsAsync<BatchExecutionException>(() => generator.GenerateAsync(["a", "b"]).WaitAsync(Patience));
        Assert.Contains("returned 1 embedding(s) for 2 value(s)", error.InnerException?.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Empty_values_return_empty_without_an_inner_call_and_null_values_throw()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        Assert.Empty(await generator.GenerateAsync([]).WaitAsync(Patience));
        Assert.Empty(inner.Calls);
        await Assert.ThrowsAsync<ArgumentNullException>(() => generator.GenerateAsync(null!));
    }

    [Fact]
    public void Invalid_options_fail_when_the_pipeline_is_built()
    {
        var inner = new RecordingGenerator();
        var builder = new EmbeddingGeneratorBuilder<string, Embedding<float>>(inner);
        ArgumentException size = Assert.Throws<ArgumentException>(() => builder.UseBatching(o => o.MaxBatchSize = 0).Build());
        Assert.Equal(nameof(BatchingOptions.MaxBatchSize), size.ParamName);

        var wrongType = new EmbeddingGeneratorBuilder<string, Embedding<float>>(inner).UseBatching(o =>
        {
            o.ItemWeight = (int x) => x;
            o.MaxBatchWeight = 10;
        });
        ArgumentException weight = Assert.Throws<ArgumentException>(() => wrongType.Build());
        Assert.Equal(nameof(BatchingOptions.ItemWeight), weight.ParamName);
        Assert.Contains("Func<String, int>", weight.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Item_weight_bounds_each_inner_call_and_an_input_heavier_than_the_limit_fails_alone()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner, o =>
        {
            o.ItemWeight = (string s) => s.Length;
            o.MaxBatchWeight = 6;
        });
        inner.Hold();
        Task<GeneratedEmbeddings<Embedding<float>>> first = generator.GenerateAsync(["x"]);
        await inner.Entered.WaitAsync(Patience);
        string[] values = ["aaaa", "bb", "cccc", "dd", "e"];
        Task<GeneratedEmbeddings<Embedding<float>>> call = generator.GenerateAsync(values);
        await WaitQueuedAsync(generator, values.Length);
        inner.Release();
        AssertEmbeddings(values, await call.WaitAsync(Patience));
        await first.WaitAsync(Patience);
        Assert.All(inner.Calls, c => Assert.InRange(c.Values.Sum(v => v.Length), 1, 6));

        await Assert.ThrowsAsync<ArgumentException>(() => generator.GenerateAsync(["much too long"]).WaitAsync(Patience));
    }

    [Fact]
    public async Task Processors_are_named_after_the_inner_metadata_and_report_health()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        var health = generator.GetRequiredService<Batching.IBatchingHealthContributor>();
        Assert.Equal("fake/fake-model", health.Name);
        Assert.Contains("no calls yet", health.CheckHealth().Description, StringComparison.Ordinal);

        await generator.GenerateAsync(["a"]).WaitAsync(Patience);
        await generator.GenerateAsync(["a"], new EmbeddingGenerationOptions { ModelId = "m", Dimensions = 2 }).WaitAsync(Patience);
        await generator.GenerateAsync(["a"], new EmbeddingGenerationOptions { AdditionalProperties = new() { ["k"] = 1 } }).WaitAsync(Patience);
        Assert.Equal(["fake/fake-model", "fake/fake-model [#2]", "fake/fake-model [model=m dimensions=2]"],
            Middleware(generator).Partitions.Select(p => p.Name).Order(StringComparer.Ordinal));
        Assert.Equal(Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Healthy, health.CheckHealth().Status);
        Assert.Equal("fake", generator.GetRequiredService<EmbeddingGeneratorMetadata>().ProviderName);
    }

    [Fact]
    public async Task A_configured_name_wins_over_the_metadata()
    {
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(new RecordingGenerator(), o => o.Name = "mine");
        await generator.GenerateAsync(["a"]).WaitAsync(Patience);
        Assert.Equal("mine", Assert.Single(Middleware(generator).Partitions).Name);
    }

    [Fact]
    public async Task Past_MaxPartitions_calls_go_to_the_inner_generator_unbatched()
    {
        var inner = new RecordingGenerator();
        using IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        for (int i = 0; i <= BatchingEmbeddingGeneratorBuilderExtensions.MaxPartitions; i++)
        {
            var options = new EmbeddingGenerationOptions { ModelId = $"m{i}" };
            AssertEmbeddings([$"v{i}"], await generator.GenerateAsync([$"v{i}"], options).WaitAsync(Patience));
        }

        Assert.Equal(BatchingEmbeddingGeneratorBuilderExtensions.MaxPartitions, Middleware(generator).Partitions.Count);
        Assert.Equal("m64", inner.Calls[^1].Options?.ModelId);
    }

    [Fact]
    public async Task Dispose_drains_queued_calls_disposes_the_inner_generator_and_refuses_later_calls()
    {
        var inner = new RecordingGenerator();
        IEmbeddingGenerator<string, Embedding<float>> generator = Batched(inner);
        inner.Hold();
        Task<GeneratedEmbeddings<Embedding<float>>> first = generator.GenerateAsync(["first"]);
        await inner.Entered.WaitAsync(Patience);
        Task<GeneratedEmbeddings<Embedding<float>>> queued = generator.GenerateAsync(["queued"]);
        await WaitQueuedAsync(generator, 1);

        Task dispose = Task.Run(generator.Dispose);
        inner.Release();
        await dispose.WaitAsync(Patience);
        AssertEmbeddings(["queued"], await queued.WaitAsync(Patience));
        await first.WaitAsync(Patience);
        Assert.True(inner.Disposed);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => generator.GenerateAsync(["late"]));
        Assert.Equal(Microsoft.Extensions.Diagnostics.HealthChecks.HealthStatus.Unhealthy,
            generator.GetRequiredService<Batching.IBatchingHealthContributor>().CheckHealth().Status);
    }
}
