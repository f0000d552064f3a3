using Batching.Ilgpu;

namespace Batching.Ilgpu.Tests;

public class ItemKernelTests
{
    internal static GpuOptions Managed => new() { Device = GpuDevicePreference.ManagedCpu, ValidateKernelWithoutCuda = false };

    internal static GpuOptions IlgpuCpu => new() { Device = GpuDevicePreference.IlgpuCpu, ValidateKernelWithoutCuda = false };

    public static TheoryData<string> Paths => new() { "managed", "ilgpu-cpu" };

    private static GpuOptions For(string path) => path == "managed" ? Managed : IlgpuCpu;

    [Theory]
    [MemberData(nameof(Paths))]
    public async Task Items_match_the_reference(string path)
    {
        await using var processor = GpuBatchProcessor.Create<float, float, SquarePlus>(new SquarePlus { Offset = 0.5f }, For(path),
            new BatchingOptions { MaxBatchSize = 8, MaxDelay = TimeSpan.FromMilliseconds(2) });
        float[] inputs = Data.Floats(new Random(1), 40);
        float[] outputs = await Task.WhenAll(inputs.Select(x => processor.ProcessAsync(x).AsTask()));
        Assert.Equal(inputs.Select(x => SquarePlus.Reference(x, 0.5f)), outputs);
        GpuDeviceStatus device = processor.GetDevices()[0];
        Assert.Equal(path == "managed" ? GpuDeviceKind.ManagedCpu : GpuDeviceKind.IlgpuCpu, device.Kind);
        Assert.True(device.CompletedBatches >= 5);
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public async Task Struct_items_are_supported(string path)
    {
        await using var processor = GpuBatchProcessor.Create<Pair, long, PairSum>(default, For(path), new BatchingOptions { MaxBatchSize = 4, OutputCheck = OutputCheck.None });
        long[] sums = await Task.WhenAll(Enumerable.Range(0, 10).Select(i => processor.ProcessAsync(new Pair { A = i, B = int.MaxValue }).AsTask()));
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i + int.MaxValue), sums);
    }

    [Fact]
    public async Task The_cpu_form_of_a_kernel_is_used_on_the_managed_path()
    {
        await using var processor = GpuBatchProcessor.Create<float, float, Twice>(default, Managed, new BatchingOptions { MaxBatchSize = 64 });
        float[] outputs = await Task.WhenAll(Enumerable.Range(0, 200).Select(i => processor.ProcessAsync(i).AsTask()));
        Assert.Equal(Enumerable.Range(0, 200).Select(i => i * 2f), outputs);
    }

    [Fact]
    public void A_kernel_that_cannot_compile_fails_start_up_naming_the_kernel()
    {
        var ex = Assert.Throws<KernelCompilationException>(() =>
            GpuBatchProcessor.Create<int, int, Throwing>(default, new GpuOptions { Device = GpuDevicePreference.ManagedCpu, ValidateKernelWithoutCuda = true }));
        Assert.Equal(typeof(Throwing), ex.KernelType);
        Assert.Contains(typeof(Throwing).FullName!, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_valid_kernel_compiles_after_a_failed_one()
    {
        // The failed compile used a Context of its own, so it cannot poison this one.
        Assert.Throws<KernelCompilationException>(() =>
            GpuBatchProcessor.Create<int, int, Throwing>(default, new GpuOptions { Device = GpuDevicePreference.ManagedCpu }));
        await using var processor = GpuBatchProcessor.Create<float, float, SquarePlus>(default,
            new GpuOptions { Device = GpuDevicePreference.ManagedCpu, ValidateKernelWithoutCuda = true });
        Assert.Equal(9f, await processor.ProcessAsync(3f));
    }

    [Fact]
    public async Task Auto_without_cuda_uses_the_managed_path()
    {
        await using var processor = GpuBatchProcessor.Create<float, float, SquarePlus>(default, new GpuOptions { ValidateKernelWithoutCuda = false });
        Assert.Equal(4f, await processor.ProcessAsync(2f));
        GpuDeviceStatus only = Assert.Single(processor.GetDevices());
        Assert.Equal(GpuDeviceKind.ManagedCpu, only.Kind);
        Assert.True(only.IsFallback);
        Assert.False(processor.HasHealthyGpu);
    }

    [Fact]
    public void Requiring_cuda_without_a_device_fails_start_up()
    {
        var ex = Assert.Throws<InvalidOperationException>(() =>
            GpuBatchProcessor.Create<float, float, SquarePlus>(default, new GpuOptions { Device = GpuDevicePreference.Cuda }));
        Assert.Contains("no CUDA device", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Non_finite_inputs_are_rejected_for_their_caller_only()
    {
        await using var processor = GpuBatchProcessor.Create<float, float, SquarePlus>(default,
            new GpuOptions { Device = GpuDevicePreference.ManagedCpu, ValidateKernelWithoutCuda = false, RejectNonFiniteInputs = true },
            new BatchingOptions { MaxDelay = TimeSpan.FromMilliseconds(5) });
        Task<float> good = processor.ProcessAsync(3f).AsTask();
        await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessAsync(float.NaN).AsTask());
        await Assert.ThrowsAsync<ArgumentException>(() => processor.ProcessAsync(float.PositiveInfinity).AsTask());
        Assert.Equal(9f, await good);
    }
}
