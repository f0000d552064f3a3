using Batching.Ilgpu.Internal;
using ILGPU.Runtime.Cuda;
using Microsoft.Extensions.Logging.Abstractions;

namespace Batching.Ilgpu.Tests.Internal;

/// <summary>A device that doubles its inputs, or fails, hangs or blocks on cue.</summary>
internal sealed class FakeDevice(string name, int maxInFlight = 2) : IExecutionDevice<float, float>
{
    private int _running;

    public string Name { get; } = name;

    public GpuDeviceKind Kind { get; init; } = GpuDeviceKind.Cuda;

    public int MaxInFlight { get; } = maxInFlight;

    /// <summary>Returns the exception for the n-th call (0-based), or null to succeed.</summary>
    public Func<int, Exception?> FailOn { get; set; } = _ => null;

    /// <summary>When set, each run waits for it before finishing.</summary>
    public TaskCompletionSource? Gate { get; set; }

    public int Calls;
    public int MaxObservedInFlight;
    public int Releases;
    public bool ReleaseThrows { get; set; }

    public async ValueTask RunAsync(ReadOnlyMemory<float> inputs, Memory<float> outputs, CancellationToken cancellationToken)
    {
        int call = Interlocked.Increment(ref Calls) - 1;
        int running = Interlocked.Increment(ref _running);
        InterlockedMax(ref MaxObservedInFlight, running);
        try
        {
            if (Gate is { } gate)
            {
                await gate.Task.WaitAsync(cancellationToken);
            }

            if (FailOn(call) is { } error)
            {
                throw error;
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = inputs.Span[i] * 2;
            }
        }
        finally
        {
            Interlocked.Decrement(ref _running);
        }
    }

    public void Release(bool faulted)
    {
        Interlocked.Increment(ref Releases);
        if (ReleaseThrows)
        {
            throw new CudaException("CUDA_ERROR_ASSERT");
        }
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen)
        {
        }
    }
}

public class DeviceRouterTests
{
    private static DeviceRouter<float, float> Router(IExecutionDevice<float, float>[] gpus, IExecutionDevice<float, float>? fallback, int maxRetries = 2) =>
        new(gpus, fallback, maxRetries, "test", NullLogger.Instance, TimeProvider.System);

    private static FakeDevice Cpu() => new("cpu", 4) { Kind = GpuDeviceKind.ManagedCpu };

    private static async Task<float[]> Run(DeviceRouter<float, float> router, params float[] inputs)
    {
        var outputs = new float[inputs.Length];
        await router.RunAsync(inputs, outputs, CancellationToken.None);
        return outputs;
    }

    [Fact]
    public async Task Each_batch_goes_to_the_device_with_the_least_outstanding_work()
    {
        var gate = new TaskCompletionSource();
        var a = new FakeDevice("a") { Gate = gate };
        var b = new FakeDevice("b") { Gate = gate };
        DeviceRouter<float, float> router = Router([a, b], Cpu());
        Task<float[]>[] runs = Enumerable.Range(0, 4).Select(i => Run(router, i)).ToArray();
        await WaitUntil(() => a.Calls + b.Calls == 4);
        Assert.Equal(2, a.Calls);
        Assert.Equal(2, b.Calls);
        Assert.Equal([2, 2, 0], router.GetDevices().Select(d => d.InFlightBatches));

        // Both devices are full: a fifth batch waits for a slot rather than overfilling one.
        Task<float[]> fifth = Run(router, 10);
        await Task.Delay(50);
        Assert.Equal(4, a.Calls + b.Calls);
        gate.SetResult();
        Assert.Equal(new float[] { 20f }, await fifth);
        await Task.WhenAll(runs);
        Assert.True(a.MaxObservedInFlight <= 2 && b.MaxObservedInFlight <= 2);
        Assert.Equal([0, 0, 0], router.GetDevices().Select(d => d.InFlightBatches));
        Assert.Equal(5, router.GetDevices().Sum(d => d.CompletedBatches));
    }

    [Fact]
    public async Task A_device_fault_quarantines_the_device_and_reroutes_the_batch()
    {
        var a = new FakeDevice("a") { FailOn = n => n == 0 ? new CudaException("CUDA_ERROR_ASSERT") : null };
        var b = new FakeDevice("b");
        var cpu = Cpu();
        DeviceRouter<float, float> router = Router([a, b], cpu);
        Assert.Equal(new float[] { 6f }, await Run(router, 3));
        IReadOnlyList<GpuDeviceStatus> devices = router.GetDevices();
        Assert.False(devices[0].IsHealthy);
        Assert.Contains("CUDA_ERROR_ASSERT", devices[0].FaultReason, StringComparison.Ordinal);
        Assert.NotNull(devices[0].FaultedAt);
        Assert.True(devices[1].IsHealthy);
        Assert.True(router.HasHealthyGpu);

        // The quarantined device gets nothing more, and is released (guarded) once nothing runs on it.
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(new float[] { 2f * i }, await Run(router, i));
        }

        Assert.Equal(1, a.Calls);
        Assert.Equal(6, b.Calls);
        await WaitUntil(() => a.Releases == 1);
        Assert.Equal(0, cpu.Calls);
    }

    [Fact]
    public async Task With_no_healthy_gpu_left_batches_run_on_the_cpu_fallback()
    {
        var a = new FakeDevice("a") { FailOn = _ => new InvalidOperationException("device lost"), ReleaseThrows = true };
        var b = new FakeDevice("b") { FailOn = _ => new TimeoutException("hung") };
        var cpu = Cpu();
        DeviceRouter<float, float> router = Router([a, b], cpu);
        Assert.Equal(new float[] { 8f }, await Run(router, 4));
        Assert.False(router.HasHealthyGpu);
        Assert.Equal(1, cpu.Calls);
        Assert.Equal(new float[] { 8f }, await Run(router, 4));
        Assert.Equal(2, cpu.Calls);
        Assert.Equal(1, a.Calls);
        Assert.Equal(1, b.Calls);

        // The faulted device's release throws and is swallowed; the hung one is not released while the router runs,
        // and at dispose it is asked once (a device whose launch still runs refuses and keeps its memory).
        await WaitUntil(() => a.Releases == 1);
        Assert.Equal(0, b.Releases);
        router.Dispose();
        Assert.Equal(1, b.Releases);
        Assert.Equal(1, a.Releases);
        Assert.Equal(1, cpu.Releases);
    }

    [Fact]
    public async Task Retries_are_bounded_then_the_cpu_takes_the_batch()
    {
        FakeDevice[] gpus = Enumerable.Range(0, 5).Select(i => new FakeDevice($"g{i}") { FailOn = _ => new CudaException("CUDA_ERROR_LAUNCH_FAILED") }).ToArray();
        var cpu = Cpu();
        DeviceRouter<float, float> router = Router(gpus, cpu, maxRetries: 1);
        Assert.Equal(new float[] { 2f }, await Run(router, 1));
        Assert.Equal(2, gpus.Sum(g => g.Calls));
        Assert.Equal(1, cpu.Calls);
        Assert.Equal(3, router.GetDevices().Count(d => d.IsHealthy && !d.IsFallback));
    }

    [Fact]
    public async Task Callers_see_an_error_only_when_no_path_can_run_the_batch()
    {
        var a = new FakeDevice("a") { FailOn = _ => new CudaException("CUDA_ERROR_ASSERT") };
        DeviceRouter<float, float> noFallback = Router([a], fallback: null);
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => Run(noFallback, 1));
        Assert.IsType<CudaException>(ex.InnerException);

        var broken = new FakeDevice("cpu") { Kind = GpuDeviceKind.ManagedCpu, FailOn = _ => new DivideByZeroException() };
        DeviceRouter<float, float> failingCpu = Router([new FakeDevice("b") { FailOn = _ => new CudaException("CUDA_ERROR_ASSERT") }], broken);
        await Assert.ThrowsAsync<DivideByZeroException>(() => Run(failingCpu, 1));
        Assert.Equal(1, failingCpu.GetDevices()[1].FailedBatches);
    }

    [Fact]
    public async Task Cancellation_is_not_a_device_fault()
    {
        var a = new FakeDevice("a") { Gate = new TaskCompletionSource() };
        DeviceRouter<float, float> router = Router([a], Cpu());
        using var cts = new CancellationTokenSource();
        Task run = router.RunAsync(new float[] { 1 }, new float[1], cts.Token).AsTask();
        await WaitUntil(() => a.Calls == 1);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);
        Assert.True(router.GetDevices()[0].IsHealthy);
        Assert.Equal(0, router.GetDevices()[0].InFlightBatches);
    }

    [Fact]
    public async Task The_processor_routes_through_fake_devices_end_to_end()
    {
        var a = new FakeDevice("a") { FailOn = n => n == 3 ? new CudaException("CUDA_ERROR_ILLEGAL_ADDRESS") : null };
        var b = new FakeDevice("b");
        var cpu = Cpu();
        await using IGpuBatchProcessor<float, float> processor = GpuProcessorBuilder.Build(
            new ItemProgram<float, float, Twice>(default, rejectNonFinite: false), new GpuOptions(), new BatchingOptions { MaxBatchSize = 8 }, null, null,
            (_, _, _) => ([a, b], cpu));
        float[] outputs = await Task.WhenAll(Enumerable.Range(0, 300).Select(i => processor.ProcessAsync(i).AsTask()));
        Assert.Equal(Enumerable.Range(0, 300).Select(i => i * 2f), outputs);
        Assert.False(processor.GetDevices()[0].IsHealthy);
        Assert.True(processor.GetDevices()[1].IsHealthy);
        Assert.Equal(4, processor.GetDevices()[2].MaxInFlightBatches);
    }

    internal static async Task WaitUntil(Func<bool> condition)
    {
        for (int i = 0; i < 500 && !condition(); i++)
        {
            await Task.Delay(10);
        }

        Assert.True(condition());
    }
}
