using Batching.Ilgpu;

namespace Batching.Ilgpu.Tests;

/// <summary>The row processor's buffer calls: results written into the caller's memory, on every path.</summary>
public class RowBufferTests
{
    public static TheoryData<string> Paths => RowKernelTests.Paths;

    [Theory]
    [MemberData(nameof(Paths))]
    public async Task ProcessRowAsync_writes_each_result_into_the_callers_buffer(string path)
    {
        var random = new Random(11);
        float[] weights = RowKernelTests.Weights(random, 6, 4);
        await using IGpuRowProcessor<float> processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(RowKernelTests.Rows(path, 6, 4, weights), default,
            new BatchingOptions { MaxBatchSize = 5 });
        Assert.Equal((6, 4), (processor.InputWidth, processor.OutputWidth));
        float[][] inputs = [.. Enumerable.Range(0, 23).Select(_ => Data.Floats(random, 6))];
        float[][] outputs = [.. inputs.Select(_ => new float[4])];
        await Task.WhenAll(inputs.Select((x, i) => processor.ProcessRowAsync(x, outputs[i]).AsTask()));
        for (int i = 0; i < inputs.Length; i++)
        {
            Assert.True(Data.Close(outputs[i], DenseRelu.Reference(inputs[i], weights, 4)), $"row {i}");
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public async Task ProcessRowsAsync_runs_a_row_major_block_split_across_batches(string path)
    {
        var random = new Random(12);
        float[] weights = RowKernelTests.Weights(random, 3, 5);
        await using IGpuRowProcessor<float> processor = GpuBatchProcessor.CreateRows<float, DenseReluSimd>(RowKernelTests.Rows(path, 3, 5, weights), default,
            new BatchingOptions { MaxBatchSize = 4 });
        const int Rows = 13;
        float[] inputs = Data.Floats(random, Rows * 3);
        float[] outputs = new float[Rows * 5];
        await processor.ProcessRowsAsync(inputs, outputs);
        for (int i = 0; i < Rows; i++)
        {
            Assert.True(Data.Close(outputs.AsSpan(i * 5, 5).ToArray(), DenseRelu.Reference(inputs.AsSpan(i * 3, 3), weights, 5)), $"row {i}");
        }

        Assert.True(processor.GetDevices().Sum(d => d.CompletedBatches) >= 4, "13 rows in batches of at most 4");
    }

    [Fact]
    public async Task Buffers_of_the_wrong_length_fail_the_call_before_anything_is_queued()
    {
        float[] weights = RowKernelTests.Weights(new Random(1), 4, 2);
        await using IGpuRowProcessor<float> processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(RowKernelTests.Rows("managed", 4, 2, weights));
        var input = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessRowAsync(new float[3], new float[2]).AsTask());
        Assert.Equal("input", input.ParamName);
        Assert.Contains("InputWidth is 4", input.Message);
        var output = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessRowAsync(new float[4], new float[3]).AsTask());
        Assert.Equal("output", output.ParamName);
        Assert.Contains("OutputWidth is 2", output.Message);
        var ragged = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessRowsAsync(new float[10], new float[4]).AsTask());
        Assert.Equal("inputs", ragged.ParamName);
        var short_ = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessRowsAsync(new float[8], new float[3]).AsTask());
        Assert.Equal("outputs", short_.ParamName);
        var many = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessManyAsync(new ReadOnlyMemory<float>[] { new float[4], new float[5] }, new float[2][]).AsTask());
        Assert.Contains("inputs[1]", many.Message);
        Assert.Equal(0, processor.GetDevices().Sum(d => d.CompletedBatches));

        // An empty block is a call with nothing to do.
        await processor.ProcessRowsAsync(ReadOnlyMemory<float>.Empty, Memory<float>.Empty);
    }

    [Fact]
    public async Task The_array_overloads_return_new_rows_and_a_rejected_call_fills_nothing()
    {
        float[] weights = RowKernelTests.Weights(new Random(5), 2, 3);
        await using IGpuRowProcessor<float> processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(RowKernelTests.Rows("managed", 2, 3, weights, rejectNonFinite: true));
        ReadOnlyMemory<float>[] rows = [new float[] { 1, 2 }, new float[] { -1, 0.5f }];
        float[][] outputs = new float[2][];
        await processor.ProcessManyAsync(rows, outputs);
        Assert.True(Data.Close(outputs[1], DenseRelu.Reference(rows[1].Span, weights, 3)));
        Assert.NotSame(outputs[0], outputs[1]);

        float[][] untouched = new float[2][];
        await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessManyAsync(new ReadOnlyMemory<float>[] { new float[] { 1, 1 }, new float[] { float.NaN, 1 } }, untouched).AsTask());
        Assert.All(untouched, Assert.Null);
    }

    [Fact]
    public async Task A_row_weight_is_the_users_function_of_the_input_row()
    {
        float[] weights = RowKernelTests.Weights(new Random(6), 2, 2);
        int calls = 0;
        await using IGpuRowProcessor<float> processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(RowKernelTests.Rows("managed", 2, 2, weights), default,
            new BatchingOptions { ItemWeight = (Func<ReadOnlyMemory<float>, int>)(row => { Interlocked.Increment(ref calls); return row.Span[0] > 100 ? 50 : 1; }), MaxBatchWeight = 10 });
        float[] output = new float[2];
        await processor.ProcessRowAsync(new float[] { 1, 2 }, output);
        Assert.Equal(1, calls);
        var heavy = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessRowAsync(new float[] { 500, 2 }, output).AsTask());
        Assert.Contains("MaxBatchWeight", heavy.Message);
    }

    [Fact]
    public async Task A_batch_of_70000_rows_runs_on_the_ilgpu_accelerator()
    {
        // A 2D launch put rows on grid Y (limit 65,535), and every caller of such a batch failed.
        const int Rows = 70_000;
        float[] weights = [3, 0.5f]; // 1 -> 1: relu(3x + 0.5)
        await using IGpuRowProcessor<float> processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(RowKernelTests.Rows("ilgpu-cpu", 1, 1, weights), default,
            new BatchingOptions { MaxBatchSize = Rows, QueueCapacity = Rows });
        float[] inputs = [.. Enumerable.Range(0, Rows).Select(i => (i % 100) / 10f)];
        float[] outputs = new float[Rows];
        await processor.ProcessRowsAsync(inputs, outputs);
        for (int i = 0; i < Rows; i++)
        {
            Assert.Equal(Math.Max(0, (3 * inputs[i]) + 0.5f), outputs[i], 4);
        }

        GpuDeviceStatus simulator = processor.GetDevices()[0];
        Assert.Equal(GpuDeviceKind.IlgpuCpu, simulator.Kind);
        Assert.Equal(0, simulator.FailedBatches);
        Assert.Equal(1, simulator.CompletedBatches); // one batch of 70,000, more than a 2D grid could hold
        Assert.True(simulator.IsHealthy);
        Assert.Equal(0, processor.GetDevices()[1].CompletedBatches); // the managed fallback never ran
    }
}
