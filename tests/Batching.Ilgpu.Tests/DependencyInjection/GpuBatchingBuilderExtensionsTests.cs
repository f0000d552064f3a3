using Batching.Ilgpu;
using Microsoft.Extensions.DependencyInjection;

namespace Batching.Ilgpu.Tests.DependencyInjection;

public class GpuBatchingBuilderExtensionsTests
{
    [Fact]
    public async Task An_item_processor_resolves_as_both_interfaces()
    {
        var services = new ServiceCollection();
        services.AddBatching().AddGpuProcessor<float, float, SquarePlus>(new SquarePlus { Offset = 1 },
            gpu => { gpu.Device = GpuDevicePreference.ManagedCpu; gpu.ValidateKernelWithoutCuda = false; },
            o => o.MaxBatchSize = 4);
        await using ServiceProvider provider = services.BuildServiceProvider();
        var gpuProcessor = provider.GetRequiredService<IGpuBatchProcessor<float, float>>();
        Assert.Same(gpuProcessor, provider.GetRequiredService<IBatchProcessor<float, float>>());
        Assert.Equal(5f, await gpuProcessor.ProcessAsync(2f));
        Assert.Equal(GpuDeviceKind.ManagedCpu, gpuProcessor.GetDevices()[0].Kind);
    }

    [Fact]
    public async Task Keyed_row_processors_have_their_own_widths_and_parameters()
    {
        var services = new ServiceCollection();
        float[] small = RowKernelTests.Weights(new Random(1), 2, 1);
        float[] large = RowKernelTests.Weights(new Random(2), 3, 2);
        services.AddBatching()
            .AddKeyedGpuRowProcessor<float, DenseRelu>("small", rows => Configure(rows, 2, 1, small))
            .AddKeyedGpuRowProcessor<float, DenseRelu>("large", rows => Configure(rows, 3, 2, large));
        await using ServiceProvider provider = services.BuildServiceProvider();
        var a = provider.GetRequiredKeyedService<IBatchProcessor<ReadOnlyMemory<float>, float[]>>("small");
        var b = provider.GetRequiredKeyedService<IGpuBatchProcessor<ReadOnlyMemory<float>, float[]>>("large");
        Assert.True(Data.Close(await a.ProcessAsync(new float[] { 1, 2 }), DenseRelu.Reference(new float[] { 1, 2 }, small, 1)));
        Assert.True(Data.Close(await b.ProcessAsync(new float[] { 1, 2, 3 }), DenseRelu.Reference(new float[] { 1, 2, 3 }, large, 2)));
        await Assert.ThrowsAsync<ArgumentException>(() => a.ProcessAsync(new float[3]).AsTask());
    }

    [Fact]
    public async Task An_unkeyed_row_processor_resolves()
    {
        var services = new ServiceCollection();
        float[] weights = RowKernelTests.Weights(new Random(1), 2, 2);
        services.AddBatching().AddGpuRowProcessor<float, DenseReluSimd>(rows => Configure(rows, 2, 2, weights));
        await using ServiceProvider provider = services.BuildServiceProvider();
        var processor = provider.GetRequiredService<IBatchProcessor<ReadOnlyMemory<float>, float[]>>();
        Assert.True(Data.Close(await processor.ProcessAsync(new float[] { 1, -1 }), DenseRelu.Reference(new float[] { 1, -1 }, weights, 2)));

        // One instance behind all three service types; the row form writes into the caller's buffer.
        var rows = provider.GetRequiredService<IGpuRowProcessor<float>>();
        Assert.Same(rows, processor);
        Assert.Same(rows, provider.GetRequiredService<IGpuBatchProcessor<ReadOnlyMemory<float>, float[]>>());
        float[] output = new float[2];
        await rows.ProcessRowAsync(new float[] { 1, -1 }, output);
        Assert.True(Data.Close(output, DenseRelu.Reference(new float[] { 1, -1 }, weights, 2)));
    }

    [Fact]
    public async Task A_keyed_row_processor_is_resolvable_as_its_row_interface()
    {
        var services = new ServiceCollection();
        float[] weights = RowKernelTests.Weights(new Random(2), 3, 1);
        services.AddBatching().AddKeyedGpuRowProcessor<float, DenseReluSimd>("dense", rows => Configure(rows, 3, 1, weights));
        await using ServiceProvider provider = services.BuildServiceProvider();
        var rows = provider.GetRequiredKeyedService<IGpuRowProcessor<float>>("dense");
        Assert.Same(rows, provider.GetRequiredKeyedService<IGpuBatchProcessor<ReadOnlyMemory<float>, float[]>>("dense"));
        Assert.Same(rows, provider.GetRequiredKeyedService<IBatchProcessor<ReadOnlyMemory<float>, float[]>>("dense"));
        Assert.Equal((3, 1), (rows.InputWidth, rows.OutputWidth));
    }

    private static void Configure(GpuRowOptions<float> rows, int inputWidth, int outputWidth, float[] parameters)
    {
        rows.Device = GpuDevicePreference.ManagedCpu;
        rows.ValidateKernelWithoutCuda = false;
        rows.InputWidth = inputWidth;
        rows.OutputWidth = outputWidth;
        rows.Parameters = parameters;
    }
}
