using Batching.Ilgpu;

namespace Batching.Ilgpu.Tests;

public class GpuOptionsTests
{
    [Fact]
    public void The_documented_defaults_are_the_real_ones()
    {
        var options = new GpuOptions();
        Assert.Equal(GpuDevicePreference.Auto, options.Device);
        Assert.Null(options.CudaDeviceIds);
        Assert.Equal(1, options.InstancesPerDevice);
        Assert.Equal(3, options.MaxBatchesInFlightPerDevice);
        Assert.Equal(GpuOptions.DefaultMaxBatchesInFlightPerDevice, options.MaxBatchesInFlightPerDevice);
        Assert.Equal(2, options.MaxRetries);
        Assert.Equal(TimeSpan.FromSeconds(10), options.LaunchTimeout);
        Assert.True(options.FallbackToCpu);
        Assert.False(options.RejectNonFiniteInputs);
        Assert.True(options.ValidateKernelWithoutCuda);
        var rows = new GpuRowOptions<float>();
        Assert.Equal(0, rows.InputWidth);
        Assert.Equal(0, rows.OutputWidth);
        Assert.True(rows.Parameters.IsEmpty);
    }

    [Theory]
    [InlineData(nameof(GpuOptions.InstancesPerDevice))]
    [InlineData(nameof(GpuOptions.MaxBatchesInFlightPerDevice))]
    [InlineData(nameof(GpuOptions.MaxRetries))]
    [InlineData(nameof(GpuOptions.LaunchTimeout))]
    public void Out_of_range_settings_are_named(string setting)
    {
        var options = new GpuOptions();
        switch (setting)
        {
            case nameof(GpuOptions.InstancesPerDevice): options.InstancesPerDevice = 0; break;
            case nameof(GpuOptions.MaxBatchesInFlightPerDevice): options.MaxBatchesInFlightPerDevice = 17; break;
            case nameof(GpuOptions.MaxRetries): options.MaxRetries = -1; break;
            default: options.LaunchTimeout = TimeSpan.Zero; break;
        }

        Assert.Equal(setting, Assert.Throws<ArgumentException>(options.Validate).ParamName);
    }

    [Fact]
    public async Task Max_concurrent_batches_left_at_one_becomes_the_device_capacity()
    {
        var options = new BatchingOptions();
        await using var processor = GpuBatchProcessor.Create<float, float, SquarePlus>(default,
            new GpuOptions { Device = GpuDevicePreference.ManagedCpu, ValidateKernelWithoutCuda = false, MaxBatchesInFlightPerDevice = 5 }, options);
        Assert.Equal(1, options.MaxConcurrentBatches); // the caller's object is not changed
        Assert.Equal(5, processor.GetDevices()[0].MaxInFlightBatches);
        Assert.Equal(1f, await processor.ProcessAsync(1f));
    }
}
