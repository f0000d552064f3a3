using Batching.Ilgpu;

namespace Batching.Ilgpu.Tests;

/// <summary>Multi-item calls (a request of k rows, or k items) on the GPU processors, here on the CPU paths.</summary>
public class MultiRowTests
{
    [Theory]
    [MemberData(nameof(RowKernelTests.Paths), MemberType = typeof(RowKernelTests))]
    public async Task A_request_of_k_rows_is_split_across_batches_and_matches_single_calls(string path)
    {
        var random = new Random(11);
        float[] weights = RowKernelTests.Weights(random, 5, 3);
        await using var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(RowKernelTests.Rows(path, 5, 3, weights), default,
            new BatchingOptions { MaxBatchSize = 6 });

        foreach (int k in new[] { 4, 6, 23 })
        {
            ReadOnlyMemory<float>[] rows = [.. Enumerable.Range(0, k).Select(_ => (ReadOnlyMemory<float>)Data.Floats(random, 5))];
            var outputs = new float[k][];
            await processor.ProcessManyAsync(rows, outputs).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            for (int i = 0; i < k; i++)
            {
                Assert.True(Data.Close(outputs[i], DenseRelu.Reference(rows[i].ToArray(), weights, 3)), $"row {i} of {k}");
                float[] single = await processor.ProcessAsync(rows[i]);
                Assert.True(Data.Close(outputs[i], single), $"row {i} of {k}, single call");
            }
        }
    }

    [Fact]
    public async Task A_row_of_the_wrong_width_fails_the_request_naming_its_index_before_anything_is_queued()
    {
        float[] weights = RowKernelTests.Weights(new Random(2), 4, 2);
        await using var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(RowKernelTests.Rows("managed", 4, 2, weights));
        ReadOnlyMemory<float>[] rows = [new float[4], new float[4], new float[3]];

        var error = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessManyAsync(rows, new float[3][]).AsTask());

        Assert.Equal("inputs", error.ParamName);
        Assert.Contains("inputs[2]", error.Message, StringComparison.Ordinal);
        Assert.Equal(0, processor.GetLoad().QueuedItems);
    }

    [Fact]
    public async Task The_item_kernel_processor_takes_multi_item_calls_with_priorities()
    {
        await using var processor = GpuBatchProcessor.Create<float, float, SquarePlus>(new SquarePlus { Offset = 1 }, ItemKernelTests.Managed,
            new BatchingOptions { MaxBatchSize = 8, PriorityLevels = 2 });
        float[] inputs = [.. Enumerable.Range(0, 50).Select(i => i * 0.5f)];
        var outputs = new float[inputs.Length];

        await processor.ProcessManyAsync(inputs, outputs, new RequestOptions(1)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(inputs.Select(x => SquarePlus.Reference(x, 1)), outputs);
        Assert.Equal(2, processor.GetLoad().PriorityLevels);
    }
}
