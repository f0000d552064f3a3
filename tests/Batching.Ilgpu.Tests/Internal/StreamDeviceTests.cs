using Batching.Ilgpu.Internal;
using ILGPU;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using Microsoft.Extensions.Logging.Abstractions;

namespace Batching.Ilgpu.Tests.Internal;

/// <summary>A device backend with no device: a "launch" doubles staging-in into staging-out, and can be made to hang,
/// fail or reject the launch on cue.</summary>
internal sealed class FakeBackend : IDeviceBackend<float, float>
{
    public readonly List<FakeStream> Streams = [];
    public readonly ManualResetEventSlim Running = new(true); // reset: every Synchronize blocks until set
    public Func<int, Exception?> RejectLaunch { get; set; } = _ => null; // by item count
    public Func<int, Exception?> FailSync { get; set; } = _ => null; // by synchronize number (0 = warm-up)
    public int Launches;
    public int Syncs;
    public int Rejected;
    public int Disposed;

    public void Bind()
    {
    }

    public IDeviceStream<float, float> CreateStream(long inputLength, long outputLength)
    {
        var stream = new FakeStream(this, inputLength, outputLength);
        lock (Streams)
        {
            Streams.Add(stream);
        }

        return stream;
    }

    public void SuppressFinalizers()
    {
    }

    public void Dispose() => Interlocked.Increment(ref Disposed);

    internal sealed class FakeStream(FakeBackend owner, long inputLength, long outputLength) : IDeviceStream<float, float>
    {
        private readonly float[] _in = new float[inputLength];
        private readonly float[] _out = new float[outputLength];
        public int Disposed;

        public Span<float> StagingIn => _in;

        public ReadOnlySpan<float> StagingOut => _out;

        public void Enqueue(int count, int inputLength, int outputLength)
        {
            if (owner.RejectLaunch(count) is { } error)
            {
                Interlocked.Increment(ref owner.Rejected);
                throw error;
            }

            Interlocked.Increment(ref owner.Launches);
            for (int i = 0; i < outputLength; i++)
            {
                _out[i] = _in[i] * 2;
            }
        }

        public void Synchronize()
        {
            int n = Interlocked.Increment(ref owner.Syncs) - 1;
            owner.Running.Wait();
            if (owner.FailSync(n) is { } error)
            {
                throw error;
            }
        }

        public void SuppressFinalizers()
        {
        }

        public void Dispose() => Interlocked.Increment(ref Disposed);
    }
}

public class StreamDeviceTests
{
    private const int Width = 3;

    private static IGpuRowProcessor<float> Processor(FakeBackend backend, TimeSpan launchTimeout, bool fallbackToCpu = true, int maxBatchSize = 8,
        TimeSpan? executionTimeout = null, int maxRetries = 2) =>
        GpuBatchProcessor.CreateRowsCore(
            new GpuRowOptions<float> { InputWidth = Width, OutputWidth = Width, Device = GpuDevicePreference.ManagedCpu, ValidateKernelWithoutCuda = false, FallbackToCpu = fallbackToCpu, MaxRetries = maxRetries },
            default(DoubleRow), new BatchingOptions { MaxBatchSize = maxBatchSize, QueueCapacity = 4096, ExecutionTimeout = executionTimeout ?? Timeout.InfiniteTimeSpan }, null, null,
            (program, max, _) => (
                [StreamDevice<RowCall<float>, RowWritten, float, float>.Create("fake-gpu", GpuDeviceKind.Cuda, backend, program, max, 2, launchTimeout)],
                fallbackToCpu ? new ManagedCpuDevice<RowCall<float>, RowWritten, float, float>(program, 2) : null));

    private static float[] Row(int i) => [i, i + 0.5f, -i];

    private static async Task AssertDoubled(IGpuRowProcessor<float> processor, int calls)
    {
        float[][] outputs = [.. Enumerable.Range(0, calls).Select(_ => new float[Width])];
        await Task.WhenAll(Enumerable.Range(0, calls).Select(i => processor.ProcessRowAsync(Row(i), outputs[i]).AsTask())).WaitAsync(TimeSpan.FromSeconds(30));
        for (int i = 0; i < calls; i++)
        {
            Assert.Equal(Row(i).Select(x => x * 2), outputs[i]);
        }
    }

    [Fact]
    public async Task Batches_complete_through_the_completion_thread_with_results_in_the_callers_buffers()
    {
        var backend = new FakeBackend();
        await using (IGpuRowProcessor<float> processor = Processor(backend, TimeSpan.FromSeconds(30)))
        {
            await AssertDoubled(processor, 200);
            GpuDeviceStatus gpu = processor.GetDevices()[0];
            Assert.True(gpu.IsHealthy);
            Assert.True(gpu.CompletedBatches >= 200 / 8);
            Assert.Equal(0, processor.GetDevices()[1].CompletedBatches);
        }

        // Disposing the processor released the device: every stream and the backend itself.
        Assert.Equal(1, backend.Disposed);
        Assert.All(backend.Streams, s => Assert.Equal(1, s.Disposed));
    }

    [Fact]
    public async Task A_hung_launch_times_out_quarantines_the_device_and_its_batches_rerun_on_the_cpu()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend, TimeSpan.FromMilliseconds(300));
        try
        {
            backend.Running.Reset(); // from now on the device never finishes a launch
            await AssertDoubled(processor, 40);
            GpuDeviceStatus gpu = processor.GetDevices()[0];
            Assert.False(gpu.IsHealthy);
            Assert.Contains("LaunchTimeout", gpu.FaultReason);
            Assert.True(processor.GetDevices()[1].CompletedBatches > 0, "the batches were re-run on the managed CPU path");

            // Still serving, on the CPU path.
            await AssertDoubled(processor, 10);
        }
        finally
        {
            backend.Running.Set(); // lets the stuck completion thread go
        }

        // A hung device is never released: its memory may still be in use.
        Assert.Equal(0, backend.Disposed);
    }

    [Fact]
    public async Task A_launch_the_device_cannot_take_runs_on_the_cpu_path_and_the_device_stays_in_rotation()
    {
        var backend = new FakeBackend { RejectLaunch = count => count > 1 ? new ArgumentException("Invalid grid dimensions (1, 70000, 1)") : null };
        await using IGpuRowProcessor<float> processor = Processor(backend, TimeSpan.FromSeconds(30));
        float[] inputs = [.. Enumerable.Range(0, 6).SelectMany(Row)];
        float[] outputs = new float[inputs.Length];
        await processor.ProcessRowsAsync(inputs, outputs).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(inputs.Select(x => x * 2), outputs);
        Assert.True(backend.Rejected >= 1);
        GpuDeviceStatus gpu = processor.GetDevices()[0];
        Assert.True(gpu.IsHealthy, "a launch-shape error is not a device fault");
        Assert.True(processor.GetDevices()[1].CompletedBatches >= 1);

        // Batches it can take still go to it.
        long before = gpu.CompletedBatches;
        float[] output = new float[Width];
        await processor.ProcessRowAsync(Row(1), output);
        Assert.Equal(before + 1, processor.GetDevices()[0].CompletedBatches);
    }

    [Fact]
    public async Task Without_a_fallback_a_launch_the_device_cannot_take_fails_its_callers_as_a_batch_error_not_bad_input()
    {
        var backend = new FakeBackend { RejectLaunch = count => count > 1 ? new ArgumentException("Invalid grid dimensions") : null };
        await using IGpuRowProcessor<float> processor = Processor(backend, TimeSpan.FromSeconds(30), fallbackToCpu: false);
        float[] inputs = [.. Enumerable.Range(0, 6).SelectMany(Row)];
        Exception error = await Assert.ThrowsAnyAsync<Exception>(() => processor.ProcessRowsAsync(inputs, new float[inputs.Length]).AsTask());
        Assert.IsNotType<ArgumentException>(error);
        Assert.Contains("launch limits", error.ToString());
        Assert.True(processor.GetDevices()[0].IsHealthy);
    }

    [Fact]
    public async Task A_fault_reported_by_the_stream_quarantines_the_device_and_no_caller_is_lost()
    {
        var backend = new FakeBackend { FailSync = n => n == 3 ? new CudaException("CUDA_ERROR_ILLEGAL_ADDRESS") : null };
        await using IGpuRowProcessor<float> processor = Processor(backend, TimeSpan.FromSeconds(30));
        await AssertDoubled(processor, 100);
        Assert.False(processor.GetDevices()[0].IsHealthy);
    }

    [Fact]
    public async Task The_array_form_of_a_partly_failed_multi_row_call_hands_out_the_rows_that_succeeded()
    {
        // The first batch's stream faults; with no retry and no fallback its rows fail, and (the device now
        // quarantined) so do the later ones; the rows of a batch that finished before are handed out.
        var backend = new FakeBackend { FailSync = n => n == 2 ? new CudaException("CUDA_ERROR_ILLEGAL_ADDRESS") : null };
        await using IGpuRowProcessor<float> processor = Processor(backend, TimeSpan.FromSeconds(30), fallbackToCpu: false, maxBatchSize: 4, maxRetries: 0);
        backend.Running.Reset();
        ReadOnlyMemory<float>[] rows = [.. Enumerable.Range(0, 10).Select(i => (ReadOnlyMemory<float>)Row(i))];
        var outputs = new float[10][];
        Task call = processor.ProcessManyAsync(rows, outputs).AsTask();
        await DeviceRouterTests.WaitUntil(() => Volatile.Read(ref backend.Launches) >= 3); // warm-up + two batches in flight
        backend.Running.Set();
        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => call.WaitAsync(TimeSpan.FromSeconds(30)));
        var failed = error.ItemFailures.SelectMany(f => Enumerable.Range(f.StartIndex, f.Count)).ToHashSet();
        Assert.NotEmpty(failed);
        Assert.True(failed.Count < 10, "the first batch succeeded");
        for (int i = 0; i < 10; i++)
        {
            if (failed.Contains(i))
            {
                Assert.Null(outputs[i]);
            }
            else
            {
                Assert.Equal(Row(i).Select(x => x * 2), outputs[i]);
            }
        }
    }

    [Fact]
    public async Task A_cancelled_calls_buffer_is_never_written_after_the_call_completed()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend, Timeout.InfiniteTimeSpan);
        backend.Running.Reset(); // the launched batch waits on the device
        using var cts = new CancellationTokenSource();
        float[] output = new float[Width];
        Task call = processor.ProcessRowAsync(Row(4), output, default, cts.Token).AsTask();
        await DeviceRouterTests.WaitUntil(() => Volatile.Read(ref backend.Launches) >= 2); // warm-up + this batch
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WaitAsync(TimeSpan.FromSeconds(10)));

        // The caller owns its buffer again; the batch finishes afterwards and must drop its result.
        Array.Fill(output, 42f);
        backend.Running.Set();
        await DeviceRouterTests.WaitUntil(() => processor.GetDevices()[0].CompletedBatches >= 1);
        Assert.All(output, x => Assert.Equal(42f, x));
    }

    [Fact]
    public async Task A_call_that_timed_out_in_a_blocked_batch_is_released_and_its_buffer_left_alone()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend, Timeout.InfiniteTimeSpan, executionTimeout: TimeSpan.FromMilliseconds(100));
        backend.Running.Reset();
        float[] output = new float[Width];
        await Assert.ThrowsAsync<TimeoutException>(() => processor.ProcessRowAsync(Row(2), output).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
        Array.Fill(output, 7f);
        backend.Running.Set();
        await DeviceRouterTests.WaitUntil(() => processor.GetDevices()[0].InFlightBatches == 0);
        Assert.All(output, x => Assert.Equal(7f, x));
    }
}

public class DeviceFactoryTests
{
    private static DeviceCandidate<float, float> Candidate(string name, Func<IExecutionDevice<float, float>> start) =>
        new(name, GpuDeviceKind.Cuda, "test", start);

    [Fact]
    public void A_device_that_runs_out_of_memory_at_start_up_is_skipped_and_the_next_one_starts()
    {
        var b = new FakeDevice("b");
        List<IExecutionDevice<float, float>> started = DeviceFactory.Start(
            [Candidate("a", () => throw new OutOfMemoryException("page-locked allocation failed")), Candidate("b", () => b)],
            "p", "k", NullLogger.Instance, out string? whyNone);
        Assert.Equal([b], started);
        Assert.Contains("a failed to start: OutOfMemoryException", whyNone);
    }

    [Fact]
    public void A_driver_error_at_start_up_skips_the_device()
    {
        List<IExecutionDevice<float, float>> started = DeviceFactory.Start(
            [Candidate("a", () => throw new CudaException("CUDA_ERROR_OUT_OF_MEMORY"))], "p", "k", NullLogger.Instance, out string? whyNone);
        Assert.Empty(started);
        Assert.Contains("CUDA_ERROR_OUT_OF_MEMORY", whyNone);
    }

    [Fact]
    public void When_start_up_fails_the_instances_already_started_are_released()
    {
        var first = new FakeDevice("cuda:0 #0");
        var second = new FakeDevice("cuda:0 #1") { ReleaseThrows = true };
        var error = Assert.Throws<KernelCompilationException>(() => DeviceFactory.Start(
            [Candidate("#0", () => first), Candidate("#1", () => second), Candidate("#2", () => throw new KernelCompilationException("no"))],
            "p", "k", NullLogger.Instance, out _));
        Assert.Equal("no", error.Message);
        Assert.Equal(1, first.Releases);
        Assert.Equal(1, second.Releases); // a release that throws does not stop the others
    }

    [Fact]
    public void A_kernel_that_does_not_compile_is_reported_as_such_and_an_upload_failure_is_not()
    {
        // Compilation and parameter upload are separate steps: only the first is the kernel's fault.
        var program = new RowProgram<float, DenseRelu>(default, 2, 2, new float[6], rejectNonFinite: false);
        using var context = Context.Create(b => b.CPU());
        using var accelerator = context.CreateCPUAccelerator(0);
        using LoadedKernel<float, float> loaded = program.Load(accelerator, "ilgpu-cpu");
        Assert.NotNull(loaded.Resources);

        var throwing = new ItemProgram<int, int, Throwing>(default, rejectNonFinite: false);
        Assert.Throws<KernelCompilationException>(() => throwing.Load(accelerator, "ilgpu-cpu"));
    }
}
