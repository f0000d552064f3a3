using Batching.Ilgpu;

namespace Batching.Ilgpu.Tests;

/// <summary>
/// <c>ProcessManyAsync</c> on GPU processors (the CPU paths here): a request of k rows or items, fewer or more than
/// MaxBatchSize, lands each output at its own index and matches single calls; a bad input fails the whole call,
/// naming its index, before anything is queued.
/// </summary>
public class MultiItemTests
{
    private const int MaxBatchSize = 6;

    // Explicit, not default(RequestOptions): the default's Timeout reads as -1 tick, not Timeout.InfiniteTimeSpan (-1 ms),
    // and the engine refuses it (reported to the core). Switch these calls to the default parameter once that is fixed.
    private static readonly RequestOptions NoTimeout = new(0, Timeout.InfiniteTimeSpan);

    private static BatchingOptions Options => new() { MaxBatchSize = MaxBatchSize, MaxDelay = TimeSpan.FromMilliseconds(1) };

    public static TheoryData<string, int> PathsAndCounts => new()
    {
        { "managed", 1 }, { "managed", 4 }, { "managed", MaxBatchSize }, { "managed", (3 * MaxBatchSize) - 1 },
        { "ilgpu-cpu", 4 }, { "ilgpu-cpu", (2 * MaxBatchSize) + 1 },
    };

    [Theory]
    [MemberData(nameof(PathsAndCounts))]
    public async Task A_multi_row_call_writes_each_output_at_its_index_and_matches_single_calls(string path, int rows)
    {
        var random = new Random(rows);
        (var created, float[] weights, ReadOnlyMemory<float>[] inputs) = DenseRows(path, random, 5, 3, rows);
        await using IGpuBatchProcessor<ReadOnlyMemory<float>, float[]> processor = created;
        var outputs = new float[rows][];
        long before = Completed(processor);

        await processor.ProcessManyAsync(inputs, outputs, NoTimeout);

        // A call larger than MaxBatchSize is split: it took at least ceil(rows / MaxBatchSize) batches.
        Assert.True(Completed(processor) - before >= (rows + MaxBatchSize - 1) / MaxBatchSize);
        for (int i = 0; i < rows; i++)
        {
            Assert.True(Data.Close(outputs[i], DenseRelu.Reference(inputs[i].Span, weights, 3)), $"row {i}");
            Assert.Equal(await processor.ProcessAsync(inputs[i]), outputs[i]);
        }

        Assert.Equal(0, processor.GetLoad().QueuedItems);
    }

    [Theory]
    [MemberData(nameof(PathsAndCounts))]
    public async Task A_multi_item_call_writes_each_output_at_its_index_and_matches_single_calls(string path, int items)
    {
        await using var processor = GpuBatchProcessor.Create<float, float, SquarePlus>(new SquarePlus { Offset = 0.25f },
            path == "managed" ? ItemKernelTests.Managed : ItemKernelTests.IlgpuCpu, Options);
        float[] inputs = Data.Floats(new Random(items), items);
        var outputs = new float[items];
        long before = Completed(processor);

        await processor.ProcessManyAsync(inputs, outputs, new RequestOptions(0, TimeSpan.FromSeconds(30)));

        Assert.True(Completed(processor) - before >= (items + MaxBatchSize - 1) / MaxBatchSize);
        Assert.Equal(inputs.Select(x => SquarePlus.Reference(x, 0.25f)), outputs);
        for (int i = 0; i < items; i++)
        {
            Assert.Equal(await processor.ProcessAsync(inputs[i]), outputs[i]);
        }
    }

    public static TheoryData<string, int> BadRows => new()
    {
        { "managed", 0 }, { "managed", 3 }, { "managed", (2 * MaxBatchSize) + 1 }, { "ilgpu-cpu", MaxBatchSize },
    };

    [Theory]
    [MemberData(nameof(BadRows))]
    public async Task A_row_of_the_wrong_width_fails_the_whole_call_naming_its_index_before_anything_is_queued(string path, int bad)
    {
        var random = new Random(bad);
        (var created, float[] weights, ReadOnlyMemory<float>[] inputs) = DenseRows(path, random, 4, 2, (2 * MaxBatchSize) + 2);
        await using IGpuBatchProcessor<ReadOnlyMemory<float>, float[]> processor = created;
        inputs[bad] = Data.Floats(random, 5);
        var outputs = new float[inputs.Length][];

        ArgumentException error = await RefusedBeforeQueuingAsync(processor, inputs, outputs, bad);
        Assert.Contains("InputWidth is 4", error.Message, StringComparison.Ordinal);

        // The processor still serves, and the same rows without the bad one go through.
        inputs[bad] = Data.Floats(random, 4);
        await processor.ProcessManyAsync(inputs, outputs, NoTimeout);
        Assert.True(Data.Close(outputs[bad], DenseRelu.Reference(inputs[bad].Span, weights, 2)));
    }

    [Fact]
    public async Task A_non_finite_row_fails_the_call_naming_its_index_where_the_kernel_forbids_it()
    {
        float[] weights = RowKernelTests.Weights(new Random(2), 4, 2);
        await using var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(
            RowKernelTests.Rows("managed", 4, 2, weights, rejectNonFinite: true), default, Options);
        ReadOnlyMemory<float>[] inputs = [new float[] { 1, 2, 3, 4 }, new float[] { 1, float.NaN, 3, 4 }];
        var error = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessManyAsync(inputs, new float[2][], NoTimeout).AsTask());
        Assert.Contains("inputs[1]", error.Message, StringComparison.Ordinal);
        Assert.Contains("RejectNonFiniteInputs", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("managed", 0)]
    [InlineData("managed", MaxBatchSize + 2)]
    [InlineData("ilgpu-cpu", 1)]
    public async Task A_bad_item_fails_the_whole_call_naming_its_index_before_anything_is_queued(string path, int bad)
    {
        GpuOptions gpu = path == "managed" ? ItemKernelTests.Managed : ItemKernelTests.IlgpuCpu;
        gpu.RejectNonFiniteInputs = true;
        await using var processor = GpuBatchProcessor.Create<float, float, SquarePlus>(default, gpu, Options);
        float[] inputs = Data.Floats(new Random(bad), (2 * MaxBatchSize) + 3);
        inputs[bad] = float.PositiveInfinity;
        ArgumentException error = await RefusedBeforeQueuingAsync(processor, inputs, new float[inputs.Length], bad);
        Assert.Contains("RejectNonFiniteInputs", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Outputs_of_another_length_are_refused()
    {
        float[] weights = RowKernelTests.Weights(new Random(4), 4, 2);
        await using var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(RowKernelTests.Rows("managed", 4, 2, weights), default, Options);
        ReadOnlyMemory<float>[] inputs = [new float[4], new float[4]];
        var error = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessManyAsync(inputs, new float[3][], NoTimeout).AsTask());
        Assert.Equal("outputs", error.ParamName);
        Assert.Equal(0, processor.GetLoad().QueuedItems);
    }

    /// <summary>A dense-layer row processor on <paramref name="path"/> with random weights, and <paramref name="rows"/> random rows for it.</summary>
    private static (IGpuBatchProcessor<ReadOnlyMemory<float>, float[]> Processor, float[] Weights, ReadOnlyMemory<float>[] Rows) DenseRows(
        string path, Random random, int inputWidth, int outputWidth, int rows)
    {
        float[] weights = RowKernelTests.Weights(random, inputWidth, outputWidth);
        ReadOnlyMemory<float>[] inputs = [.. Enumerable.Range(0, rows).Select(_ => (ReadOnlyMemory<float>)Data.Floats(random, inputWidth))];
        var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(RowKernelTests.Rows(path, inputWidth, outputWidth, weights), default, Options);
        return (processor, weights, inputs);
    }

    /// <summary>Calls with <paramref name="inputs"/>, whose input at <paramref name="bad"/> is bad, and checks that the call
    /// was refused synchronously, on the caller's thread, naming that index: nothing reached the queue or a device, and
    /// no output was written.</summary>
    private static async Task<ArgumentException> RefusedBeforeQueuingAsync<TIn, TOut>(IGpuBatchProcessor<TIn, TOut> processor, TIn[] inputs, TOut[] outputs, int bad)
    {
        long before = Completed(processor);
        ValueTask call = processor.ProcessManyAsync(inputs, outputs, NoTimeout);
        Assert.True(call.IsFaulted);
        var error = await Assert.ThrowsAsync<ArgumentException>(() => call.AsTask());
        Assert.Equal("inputs", error.ParamName);
        Assert.Contains($"inputs[{bad}]", error.Message, StringComparison.Ordinal);
        Assert.Contains("Nothing was queued", error.Message, StringComparison.Ordinal);
        Assert.All(outputs, o => Assert.Equal(default, o));
        Assert.Equal(0, processor.GetLoad().QueuedItems);
        Assert.Equal(before, Completed(processor));
        return error;
    }

    private static long Completed(IGpuDiagnostics processor) => processor.GetDevices().Sum(d => d.CompletedBatches);
}
