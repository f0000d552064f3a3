using Batching.Ilgpu;

namespace Batching.Ilgpu.Tests;

public class RowKernelTests
{
    internal static GpuRowOptions<float> Rows(string path, int inputWidth, int outputWidth, float[] parameters, bool rejectNonFinite = false) => new()
    {
        Device = path == "managed" ? GpuDevicePreference.ManagedCpu : GpuDevicePreference.IlgpuCpu,
        ValidateKernelWithoutCuda = false,
        InputWidth = inputWidth,
        OutputWidth = outputWidth,
        Parameters = parameters,
        RejectNonFiniteInputs = rejectNonFinite,
    };

    internal static float[] Weights(Random random, int inputWidth, int outputWidth) => Data.Floats(random, (inputWidth * outputWidth) + outputWidth);

    public static TheoryData<string> Paths => new() { "managed", "ilgpu-cpu" };

    [Theory]
    [MemberData(nameof(Paths))]
    public async Task Dense_rows_match_the_reference(string path)
    {
        var random = new Random(7);
        float[] weights = Weights(random, 5, 3);
        await using var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(Rows(path, 5, 3, weights), default,
            new BatchingOptions { MaxBatchSize = 6, MaxDelay = TimeSpan.FromMilliseconds(2) });
        float[][] inputs = Enumerable.Range(0, 20).Select(_ => Data.Floats(random, 5)).ToArray();
        float[][] outputs = await Task.WhenAll(inputs.Select(x => processor.ProcessAsync(x).AsTask()));
        for (int i = 0; i < inputs.Length; i++)
        {
            Assert.True(Data.Close(outputs[i], DenseRelu.Reference(inputs[i], weights, 3)), $"row {i}");
        }
    }

    [Fact]
    public async Task The_simd_cpu_form_matches_the_generic_form()
    {
        var random = new Random(3);
        float[] weights = Weights(random, 37, 19);
        await using var generic = GpuBatchProcessor.CreateRows<float, DenseRelu>(Rows("managed", 37, 19, weights));
        await using var simd = GpuBatchProcessor.CreateRows<float, DenseReluSimd>(Rows("managed", 37, 19, weights));
        float[][] inputs = Enumerable.Range(0, 64).Select(_ => Data.Floats(random, 37)).ToArray();
        float[][] a = await Task.WhenAll(inputs.Select(x => generic.ProcessAsync(x).AsTask()));
        float[][] b = await Task.WhenAll(inputs.Select(x => simd.ProcessAsync(x).AsTask()));
        for (int i = 0; i < inputs.Length; i++)
        {
            Assert.True(Data.Close(b[i], a[i]), $"row {i}");
            Assert.True(Data.Close(a[i], DenseRelu.Reference(inputs[i], weights, 19)), $"row {i}");
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public async Task A_row_of_the_wrong_width_is_rejected_before_launch_for_its_caller_only(string path)
    {
        float[] weights = Weights(new Random(1), 4, 2);
        await using var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(Rows(path, 4, 2, weights), default,
            new BatchingOptions { MaxBatchSize = 4, MaxDelay = TimeSpan.FromMilliseconds(5) });
        Task<float[]> good = processor.ProcessAsync(new float[] { 1, 2, 3, 4 }).AsTask();
        var tooLong = await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessAsync(new float[5]).AsTask());
        Assert.Contains("InputWidth is 4", tooLong.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessAsync(new float[3]).AsTask());
        await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessAsync(ReadOnlyMemory<float>.Empty).AsTask());
        Assert.True(Data.Close(await good, DenseRelu.Reference(new float[] { 1, 2, 3, 4 }, weights, 2)));
    }

    [Fact]
    public async Task Nan_or_infinity_is_rejected_where_the_kernel_forbids_it()
    {
        float[] weights = Weights(new Random(1), 20, 2);
        await using var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(Rows("managed", 20, 2, weights, rejectNonFinite: true));
        float[] row = new float[20];
        row[17] = float.NegativeInfinity;
        await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessAsync(row).AsTask());
        row[17] = float.NaN;
        await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessAsync(row).AsTask());
        row[17] = 1;
        Assert.Equal(2, (await processor.ProcessAsync(row)).Length);
    }

    [Fact]
    public void Widths_are_required()
    {
        var ex = Assert.Throws<ArgumentException>(() => GpuBatchProcessor.CreateRows<float, DenseRelu>(new GpuRowOptions<float> { OutputWidth = 2 }));
        Assert.Equal(nameof(GpuRowOptions<float>.InputWidth), ex.ParamName);
    }

    [Fact]
    public void Batches_larger_than_the_index_range_are_refused()
    {
        var ex = Assert.Throws<ArgumentException>(() => GpuBatchProcessor.CreateRows<float, DenseRelu>(
            new GpuRowOptions<float> { Device = GpuDevicePreference.ManagedCpu, ValidateKernelWithoutCuda = false, InputWidth = GpuRowOptions<float>.MaxWidth, OutputWidth = 1 },
            default, new BatchingOptions { MaxBatchSize = 4096, QueueCapacity = 4096 }));
        Assert.Contains("exceeds", ex.Message, StringComparison.Ordinal);
    }
}
