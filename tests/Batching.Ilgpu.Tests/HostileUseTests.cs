using System.Buffers;
using System.Diagnostics;
using Batching.Ilgpu.Internal;
using Batching.Ilgpu.Tests.Internal;
using ILGPU.Runtime.Cuda;

namespace Batching.Ilgpu.Tests;

/// <summary>A caller-owned buffer whose span can be made to throw (a pooled native buffer disposed by its owner,
/// a MemoryManager over a mapped file that was unmapped, ...).</summary>
internal sealed class ThrowingMemory(int length) : MemoryManager<float>
{
    private readonly float[] _array = new float[length];
    public volatile bool Throw;
    public int Spans;

    public float[] Array => _array;

    public override Span<float> GetSpan()
    {
        Interlocked.Increment(ref Spans);
        return Throw ? throw new ObjectDisposedException("caller buffer") : _array;
    }

    public override MemoryHandle Pin(int elementIndex = 0) => throw new NotSupportedException();

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
    }
}

/// <summary>A backend whose streams record any touch of their staging after they were disposed.</summary>
internal sealed class TrackingBackend : IDeviceBackend<float, float>
{
    public readonly List<TrackingStream> Streams = [];
    public int TouchedAfterDispose;

    public void Bind()
    {
    }

    public IDeviceStream<float, float> CreateStream(long inputLength, long outputLength)
    {
        var s = new TrackingStream(this, inputLength, outputLength);
        Streams.Add(s);
        return s;
    }

    public void SuppressFinalizers()
    {
    }

    public void Dispose()
    {
    }

    internal sealed class TrackingStream(TrackingBackend owner, long inputLength, long outputLength) : IDeviceStream<float, float>
    {
        private readonly float[] _in = new float[inputLength];
        private readonly float[] _out = new float[outputLength];
        public volatile bool Disposed;

        public Span<float> StagingIn
        {
            get
            {
                if (Disposed)
                {
                    Interlocked.Increment(ref owner.TouchedAfterDispose);
                }

                return _in;
            }
        }

        public ReadOnlySpan<float> StagingOut => _out;

        public void Enqueue(int count, int inputLength, int outputLength)
        {
            if (Disposed)
            {
                Interlocked.Increment(ref owner.TouchedAfterDispose);
            }

            for (int i = 0; i < outputLength; i++)
            {
                _out[i] = _in[i] * 2;
            }
        }

        public void Synchronize()
        {
        }

        public void SuppressFinalizers()
        {
        }

        public void Dispose() => Disposed = true;
    }
}

/// <summary>An adversarial review of the GPU row path, kept as regression tests: ValueTask misuse, failing caller
/// buffers, releases and disposal under hung launches, guards, seeded stress.</summary>
public class HostileUseTests
{
    private const int Width = 3;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    private static IGpuRowProcessor<float> Processor(FakeBackend backend, TimeSpan? launchTimeout = null, bool fallbackToCpu = true, int maxBatchSize = 8,
        TimeSpan? executionTimeout = null, int maxRetries = 2, int maxConcurrentBatches = 1, TimeSpan? shutdownTimeout = null,
        Delegate? itemWeight = null, int maxBatchWeight = 0, bool rejectNonFinite = false, FakeBackend? second = null, int slots = 2)
    {
        TimeSpan timeout = launchTimeout ?? TimeSpan.FromSeconds(30);
        return GpuBatchProcessor.CreateRowsCore(
            new GpuRowOptions<float>
            {
                InputWidth = Width, OutputWidth = Width, Device = GpuDevicePreference.ManagedCpu, ValidateKernelWithoutCuda = false,
                FallbackToCpu = fallbackToCpu, MaxRetries = maxRetries, RejectNonFiniteInputs = rejectNonFinite,
            },
            default(DoubleRow),
            new BatchingOptions
            {
                MaxBatchSize = maxBatchSize, QueueCapacity = 4096, ExecutionTimeout = executionTimeout ?? Timeout.InfiniteTimeSpan,
                MaxConcurrentBatches = maxConcurrentBatches, ShutdownTimeout = shutdownTimeout ?? TimeSpan.FromSeconds(10),
                ItemWeight = itemWeight, MaxBatchWeight = maxBatchWeight,
            },
            null, null,
            (program, max, _) =>
            {
                var gpus = new List<IExecutionDevice<RowCall<float>, RowWritten>>
                {
                    StreamDevice<RowCall<float>, RowWritten, float, float>.Create("fake-gpu", GpuDeviceKind.Cuda, backend, program, max, slots, timeout),
                };
                if (second is not null)
                {
                    gpus.Add(StreamDevice<RowCall<float>, RowWritten, float, float>.Create("fake-gpu-2", GpuDeviceKind.Cuda, second, program, max, slots, timeout));
                }

                return (gpus, fallbackToCpu ? new ManagedCpuDevice<RowCall<float>, RowWritten, float, float>(program, 2) : null);
            });
    }

    /// <summary>Fills both slots of the (reset) fake device with one-row batches, so later calls queue together.</summary>
    private static async Task<Task[]> Hold(IGpuRowProcessor<float> processor, FakeBackend backend)
    {
        Task first = processor.ProcessRowAsync(Row(100), new float[Width]).AsTask();
        await DeviceRouterTests.WaitUntil(() => Volatile.Read(ref backend.Launches) >= 2);
        Task second = processor.ProcessRowAsync(Row(101), new float[Width]).AsTask();
        await DeviceRouterTests.WaitUntil(() => Volatile.Read(ref backend.Launches) >= 3);
        return [first, second];
    }

    private static float[] Row(int i) => [i, i + 0.5f, -i];

    private static float[] Doubled(float[] row) => [.. row.Select(x => x * 2)];

    // ---------------------------------------------------------------------------------------------------------------
    // 1. Pooled ValueTask misuse: the core promises (README "Misused ValueTasks hurt only the misuser") that a pending
    //    GetResult consumes nothing and never hurts another caller. The row processor's ProcessAsync / ProcessRowAsync
    //    are PoolingAsyncValueTaskMethodBuilder boxes, which return themselves to the pool on a failed GetResult.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public async Task A_pending_GetResult_on_the_array_form_does_not_hurt_a_later_innocent_call()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend);
        backend.Running.Reset();
        IBatchProcessor<ReadOnlyMemory<float>, float[]> asBatchProcessor = processor;

        ValueTask<float[]> misused = asBatchProcessor.ProcessAsync(Row(1));
        Assert.Throws<InvalidOperationException>(() => misused.GetAwaiter().GetResult()); // documented: consumes nothing

        // An innocent caller on the same thread, right after.
        Task<float[]> innocent = asBatchProcessor.ProcessAsync(Row(2)).AsTask();
        backend.Running.Set();

        Exception? innocentError = null;
        float[]? innocentResult = null;
        try
        {
            innocentResult = await innocent.WaitAsync(Bound);
        }
        catch (Exception ex)
        {
            innocentError = ex;
        }

        Assert.True(innocentError is null, $"an innocent caller failed because another caller misused its ValueTask: {innocentError}");
        Assert.Equal(Doubled(Row(2)), innocentResult);
    }

    [Fact]
    public async Task A_pending_GetResult_on_ProcessRowAsync_never_lets_an_innocent_call_complete_before_its_buffer_is_written()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend);
        backend.Running.Reset();
        ValueTask misused = processor.ProcessRowAsync(Row(1), new float[Width]);
        Assert.Throws<InvalidOperationException>(() => misused.GetAwaiter().GetResult());

        float[] output = new float[Width];
        Task innocent = processor.ProcessRowAsync(Row(2), output).AsTask();
        backend.Running.Set();
        string? problem = null;
        try
        {
            await innocent.WaitAsync(Bound);
            float[] atCompletion = [.. output];
            await Task.Delay(300);
            if (!atCompletion.SequenceEqual(Doubled(Row(2))))
            {
                problem = $"completed successfully holding [{string.Join(", ", atCompletion)}]; 300 ms later the buffer holds [{string.Join(", ", output)}]";
            }
        }
        catch (Exception ex)
        {
            problem = $"failed: {ex.GetType().Name}: {ex.Message}";
        }

        Assert.True(problem is null, "an innocent caller was hurt by another caller's misuse: " + problem);
    }

    [Fact]
    public async Task pending_GetResult_then_await_still_gets_the_result_as_the_core_promises()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend);
        backend.Running.Reset();
        float[] output = new float[Width];
        ValueTask call = processor.ProcessRowAsync(Row(3), output);
        Assert.Throws<InvalidOperationException>(() => call.GetAwaiter().GetResult());
        backend.Running.Set();
        Exception? error = null;
        try
        {
            await call.AsTask().WaitAsync(Bound);
        }
        catch (Exception ex)
        {
            error = ex;
        }

        Assert.True(error is null, $"a later await after a pending GetResult did not get the result: {error?.GetType().Name}: {error?.Message}");
        Assert.Equal(Doubled(Row(3)), output);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 2. A caller's buffer that throws on access: "bad input fails only that caller".
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public async Task An_input_buffer_that_throws_does_not_quarantine_a_healthy_gpu()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend);
        var bad = new ThrowingMemory(Width);
        Memory<float> badMemory = bad.Memory; // MemoryManager.Memory reads the span once
        bad.Throw = true;
        float[] output = new float[Width];
        await Assert.ThrowsAnyAsync<Exception>(() => processor.ProcessRowAsync(badMemory, output).AsTask().WaitAsync(Bound));

        GpuDeviceStatus gpu = processor.GetDevices()[0];
        Assert.True(gpu.IsHealthy, $"one caller's buffer took the GPU out of service for good: {gpu.FaultReason}");
    }

    [Fact]
    public async Task An_input_buffer_that_throws_fails_only_its_own_caller()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend);

        // Both slots busy, so the next calls queue and form one batch together.
        backend.Running.Reset();
        Task[] hold = await Hold(processor, backend);

        var bad = new ThrowingMemory(Width);
        Memory<float> badMemory = bad.Memory; // MemoryManager.Memory reads the span once
        bad.Throw = true;
        Task badCall = processor.ProcessRowAsync(badMemory, new float[Width]).AsTask();
        float[][] outputs = [.. Enumerable.Range(0, 5).Select(_ => new float[Width])];
        Task[] siblings = [.. Enumerable.Range(0, 5).Select(i => processor.ProcessRowAsync(Row(i), outputs[i]).AsTask())];
        backend.Running.Set();
        await Task.WhenAll(hold).WaitAsync(Bound);
        await Assert.ThrowsAnyAsync<Exception>(() => badCall.WaitAsync(Bound));

        var failures = new List<string>();
        for (int i = 0; i < siblings.Length; i++)
        {
            try
            {
                await siblings[i].WaitAsync(Bound);
                Assert.Equal(Doubled(Row(i)), outputs[i]);
            }
            catch (Exception ex)
            {
                failures.Add($"sibling {i}: {ex.GetType().Name}: {ex.Message}");
            }
        }

        Assert.True(failures.Count == 0, "siblings failed because of one caller's buffer:\n" + string.Join("\n", failures));
    }

    [Fact]
    public async Task An_output_buffer_that_throws_fails_only_its_own_caller()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend);
        backend.Running.Reset();
        Task[] hold = await Hold(processor, backend);

        var bad = new ThrowingMemory(Width);
        Memory<float> badMemory = bad.Memory; // MemoryManager.Memory reads the span once
        bad.Throw = true;
        Task badCall = processor.ProcessRowAsync(Row(50), badMemory).AsTask();
        float[][] outputs = [.. Enumerable.Range(0, 5).Select(_ => new float[Width])];
        Task[] siblings = [.. Enumerable.Range(0, 5).Select(i => processor.ProcessRowAsync(Row(i), outputs[i]).AsTask())];
        backend.Running.Set();
        await Task.WhenAll(hold).WaitAsync(Bound);
        await Assert.ThrowsAnyAsync<Exception>(() => badCall.WaitAsync(Bound));

        var failures = new List<string>();
        for (int i = 0; i < siblings.Length; i++)
        {
            try
            {
                await siblings[i].WaitAsync(Bound);
            }
            catch (Exception ex)
            {
                failures.Add($"sibling {i}: {ex.GetType().Name}: {ex.Message}");
            }
        }

        Assert.True(failures.Count == 0, "siblings failed because of one caller's output buffer:\n" + string.Join("\n", failures));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 3. Multi-row calls split across batches, some parts running when cancelled.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public async Task a_split_multi_row_call_cancelled_mid_flight_is_never_written_afterwards()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend, Timeout.InfiniteTimeSpan, maxBatchSize: 4);
        backend.Running.Reset();
        float[] inputs = [.. Enumerable.Range(0, 10).SelectMany(Row)];
        float[] outputs = new float[inputs.Length];
        using var cts = new CancellationTokenSource();
        Task call = processor.ProcessRowsAsync(inputs, outputs, default, cts.Token).AsTask();
        await DeviceRouterTests.WaitUntil(() => Volatile.Read(ref backend.Launches) >= 3); // warm-up + two parts launched, one queued
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WaitAsync(Bound));
        Array.Fill(outputs, 42f);
        backend.Running.Set();
        await DeviceRouterTests.WaitUntil(() => processor.GetDevices()[0].InFlightBatches == 0);
        await Task.Delay(100);
        Assert.All(outputs, x => Assert.Equal(42f, x));
    }

    [Fact]
    public async Task a_split_multi_row_call_timed_out_by_ExecutionTimeout_is_never_written_afterwards()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend, Timeout.InfiniteTimeSpan, maxBatchSize: 4, executionTimeout: TimeSpan.FromMilliseconds(150));
        backend.Running.Reset();
        float[] inputs = [.. Enumerable.Range(0, 10).SelectMany(Row)];
        float[] outputs = new float[inputs.Length];
        Task call = processor.ProcessRowsAsync(inputs, outputs).AsTask();
        await Assert.ThrowsAnyAsync<Exception>(() => call.WaitAsync(Bound));
        Array.Fill(outputs, 9f);
        backend.Running.Set();
        await DeviceRouterTests.WaitUntil(() => processor.GetDevices()[0].InFlightBatches == 0);
        await Task.Delay(200);
        Assert.All(outputs, x => Assert.Equal(9f, x));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 4. A released StreamDevice still packs a batch into its (disposed) staging before refusing it.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public async Task A_released_device_refuses_a_batch_before_packing_into_its_staging()
    {
        var backend = new TrackingBackend();
        var program = new RowProgram<float, DoubleRow>(default, Width, Width, [], rejectNonFinite: false);
        var device = StreamDevice<RowCall<float>, RowWritten, float, float>.Create("tracked", GpuDeviceKind.Cuda, backend, program, 4, 2, TimeSpan.FromSeconds(10));
        device.Release(faulted: false);
        Assert.All(backend.Streams, s => Assert.True(s.Disposed));

        var guard = new RowGuard();
        RowCall<float>[] calls = [new(Row(1), new float[Width], guard, guard.Version)];
        var written = new RowWritten[1];
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await device.RunAsync(calls, written, default));
        Assert.Equal(0, Volatile.Read(ref backend.TouchedAfterDispose)); // freed page-locked memory must not be written
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 5. Disposal while a launch hangs (LaunchTimeout longer than ShutdownTimeout).
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public async Task DisposeAsync_with_a_hung_launch_returns_promptly_after_ShutdownTimeout_and_never_writes()
    {
        var backend = new FakeBackend();
        IGpuRowProcessor<float> processor = Processor(backend, Timeout.InfiniteTimeSpan, shutdownTimeout: TimeSpan.FromMilliseconds(100));
        backend.Running.Reset();
        float[] output = new float[Width];
        Task call = processor.ProcessRowAsync(Row(5), output).AsTask();
        await DeviceRouterTests.WaitUntil(() => Volatile.Read(ref backend.Launches) >= 2);
        var watch = Stopwatch.StartNew();
        try
        {
            await processor.DisposeAsync().AsTask().WaitAsync(Bound);
            watch.Stop();
            await Assert.ThrowsAnyAsync<Exception>(() => call.WaitAsync(Bound));
            Array.Fill(output, 3f);
        }
        finally
        {
            backend.Running.Set();
        }

        await Task.Delay(200);
        Assert.All(output, x => Assert.Equal(3f, x));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(2), $"DisposeAsync took {watch.Elapsed} with ShutdownTimeout 100 ms");
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 6. ItemWeight adaptation.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public void a_mistyped_ItemWeight_is_reported_in_the_public_type_not_the_internal_RowCall()
    {
        var backend = new FakeBackend();
        var error = Assert.ThrowsAny<ArgumentException>(() => Processor(backend, itemWeight: (Func<float[], int>)(r => r.Length), maxBatchWeight: 100));
        Assert.DoesNotContain("RowCall", error.Message);
        Assert.Contains("ReadOnlyMemory", error.Message);
    }

    [Fact]
    public async Task ItemWeight_over_rows_bounds_batches()
    {
        var backend = new FakeBackend();
        int weighed = 0;
        await using IGpuRowProcessor<float> processor = Processor(backend, itemWeight: (Func<ReadOnlyMemory<float>, int>)(r => { Interlocked.Increment(ref weighed); return r.Length; }), maxBatchWeight: 6);
        float[] inputs = [.. Enumerable.Range(0, 10).SelectMany(Row)];
        float[] outputs = new float[inputs.Length];
        await processor.ProcessRowsAsync(inputs, outputs).AsTask().WaitAsync(Bound);
        Assert.Equal(inputs.Select(x => x * 2), outputs);
        Assert.Equal(10, weighed);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 7. A caller whose continuation blocks.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public async Task a_blocking_continuation_does_not_stall_its_batch_siblings_or_the_device()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend);
        backend.Running.Reset();
        Task[] hold = await Hold(processor, backend);
        using var release = new ManualResetEventSlim();
        async Task Blocker()
        {
            await processor.ProcessRowAsync(Row(7), new float[Width]);
            release.Wait(TimeSpan.FromSeconds(10)); // blocks whatever thread resumed us
        }

        Task blocker = Blocker();
        float[][] outputs = [.. Enumerable.Range(0, 6).Select(_ => new float[Width])];
        Task[] siblings = [.. Enumerable.Range(0, 6).Select(i => processor.ProcessRowAsync(Row(i), outputs[i]).AsTask())];
        backend.Running.Set();
        try
        {
            await Task.WhenAll(siblings).WaitAsync(TimeSpan.FromSeconds(3));
            float[] later = new float[Width];
            await processor.ProcessRowAsync(Row(9), later).AsTask().WaitAsync(TimeSpan.FromSeconds(3));
        }
        finally
        {
            release.Set();
        }

        await blocker.WaitAsync(Bound);
        await Task.WhenAll(hold).WaitAsync(Bound);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 8. Guards.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public void guard_versions_wrap_and_a_stale_call_never_enters()
    {
        var guard = new RowGuard();
        typeof(RowGuard).GetField("_word", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!
            .SetValue(guard, (long)int.MaxValue << 32);
        int v = guard.Version;
        Assert.True(guard.TryEnter(v));
        guard.Exit();
        guard.Close(v);
        Assert.False(guard.TryEnter(v));
        int next = guard.Version;
        Assert.NotEqual(v, next);
        Assert.True(guard.TryEnter(next));
        guard.Exit();
        guard.Close(next);
        Assert.False(guard.TryEnter(next));
    }

    [Fact]
    public async Task guards_shared_across_two_processors_through_the_thread_cache_stay_isolated()
    {
        var a = new FakeBackend();
        var b = new FakeBackend();
        await using IGpuRowProcessor<float> pa = Processor(a, Timeout.InfiniteTimeSpan);
        await using IGpuRowProcessor<float> pb = Processor(b, Timeout.InfiniteTimeSpan);

        // A call on A is cancelled while its batch hangs; its guard goes back to the (static) thread cache and is
        // rented by a call on B. A's batch then finishes and must not write into B's call (or A's old buffer).
        a.Running.Reset();
        using var cts = new CancellationTokenSource();
        float[] outA = new float[Width];
        Task callA = pa.ProcessRowAsync(Row(1), outA, default, cts.Token).AsTask();
        await DeviceRouterTests.WaitUntil(() => Volatile.Read(ref a.Launches) >= 2);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => callA.WaitAsync(Bound));
        Array.Fill(outA, 11f);
        for (int i = 0; i < 50; i++)
        {
            float[] outB = new float[Width];
            await pb.ProcessRowAsync(Row(i), outB).AsTask().WaitAsync(Bound);
            Assert.Equal(Doubled(Row(i)), outB);
        }

        a.Running.Set();
        await DeviceRouterTests.WaitUntil(() => pa.GetDevices()[0].InFlightBatches == 0);
        Assert.All(outA, x => Assert.Equal(11f, x));
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 10. Warm-up is sync-over-async: the thread that builds the processor blocks on a Task whose completion needs a
    //     thread-pool thread (the slot runs continuations asynchronously). A starved pool at start-up makes a healthy
    //     device "time out" and be abandoned.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public async Task Warm_up_on_a_starved_thread_pool_does_not_time_out_a_healthy_device()
    {
        using var unblock = new ManualResetEventSlim();
        int blockers = Math.Max(ThreadPool.ThreadCount, Environment.ProcessorCount) + 4;
        for (int i = 0; i < blockers; i++)
        {
            ThreadPool.UnsafeQueueUserWorkItem(_ => unblock.Wait(TimeSpan.FromSeconds(5)), null);
        }

        Exception? error = null;
        var builder = new Thread(() =>
        {
            try
            {
                Processor(new FakeBackend(), TimeSpan.FromMilliseconds(300)).DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(10));
            }
            catch (Exception ex)
            {
                error = ex;
            }
        });
        try
        {
            await Task.Delay(50);
            builder.Start();
            Assert.True(builder.Join(TimeSpan.FromSeconds(10)));
        }
        finally
        {
            unblock.Set();
        }

        Assert.True(error is null, $"start-up failed on a healthy device: {error?.GetType().Name}: {error?.Message}");
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 9. Seeded random stress: many callers, random cancels, a faulting device and a hanging device.
    // ---------------------------------------------------------------------------------------------------------------

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task stress_every_caller_completes_once_and_no_buffer_is_written_after_completion(int seed)
    {
        var random = new Random(seed);
        var faulty = new FakeBackend { FailSync = n => n == 10 ? new CudaException("CUDA_ERROR_ILLEGAL_ADDRESS") : null };
        int hangAt = 3 + seed;
        var hanging = new FakeBackend();
        hanging.FailSync = n =>
        {
            if (n == hangAt)
            {
                Thread.Sleep(3000); // past LaunchTimeout: the watchdog fails it; the stream "finishes" later
            }

            return null;
        };

        await using IGpuRowProcessor<float> processor = Processor(faulty, TimeSpan.FromMilliseconds(1500), maxBatchSize: 4, second: hanging,
            maxConcurrentBatches: 6);
        const int Callers = 400;
        var inputs = new float[Callers][];
        var outputs = new float[Callers][];
        var tasks = new Task[Callers];
        var sentinel = new bool[Callers];
        var ctss = new CancellationTokenSource[Callers];
        var unexpected = new System.Collections.Concurrent.ConcurrentQueue<string>();
        for (int i = 0; i < Callers; i++)
        {
            int rows = random.Next(1, 7);
            inputs[i] = [.. Enumerable.Range(0, rows).SelectMany(r => Row(i * 10 + r))];
            outputs[i] = new float[inputs[i].Length];
            ctss[i] = new CancellationTokenSource();
            if (random.Next(4) == 0)
            {
                ctss[i].CancelAfter(random.Next(0, 30));
            }

            int k = i;
            bool many = rows > 1 || random.Next(2) == 0;
            tasks[i] = Task.Run(async () =>
            {
                try
                {
                    if (many)
                    {
                        await processor.ProcessRowsAsync(inputs[k], outputs[k], default, ctss[k].Token);
                    }
                    else
                    {
                        await processor.ProcessRowAsync(inputs[k], outputs[k], default, ctss[k].Token);
                    }

                    float[] expected = [.. inputs[k].Select(x => x * 2)];
                    if (!expected.SequenceEqual(outputs[k]))
                    {
                        unexpected.Enqueue($"caller {k}: wrong output");
                    }
                }
                catch (OperationCanceledException)
                {
                    Array.Fill(outputs[k], -777f);
                    sentinel[k] = true;
                }
                catch (Exception ex)
                {
                    Array.Fill(outputs[k], -777f);
                    sentinel[k] = true;
                    unexpected.Enqueue($"caller {k}: {ex.GetType().Name}: {ex.Message}");
                }
            });
            if (random.Next(8) == 0)
            {
                await Task.Delay(random.Next(0, 3));
            }
        }

        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(60));
        await Task.Delay(3500); // let hung streams finish
        for (int i = 0; i < Callers; i++)
        {
            if (sentinel[i] && outputs[i].Any(x => x != -777f))
            {
                unexpected.Enqueue($"caller {i}: buffer written after its call completed");
            }
        }

        Assert.True(unexpected.IsEmpty, string.Join("\n", unexpected.Take(20)));

        // The schedule really exercised a stream fault and a watchdog timeout, and some cancellations.
        IReadOnlyList<GpuDeviceStatus> devices = processor.GetDevices();
        Assert.False(devices[0].IsHealthy);
        Assert.False(devices[1].IsHealthy);
        Assert.Contains("LaunchTimeout", devices[1].FaultReason);
        Assert.Contains(sentinel, x => x);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // 11. Added in this pass.
    // ---------------------------------------------------------------------------------------------------------------

    [Fact]
    public async Task a_rejected_row_in_ProcessRowsAsync_queues_nothing_and_never_touches_outputs()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend, rejectNonFinite: true);
        int launches = Volatile.Read(ref backend.Launches);
        float[] inputs = [.. Enumerable.Range(0, 10).SelectMany(Row)];
        inputs[^1] = float.NaN;
        float[] outputs = new float[inputs.Length];
        Array.Fill(outputs, 5f);
        await Assert.ThrowsAnyAsync<ArgumentException>(() => processor.ProcessRowsAsync(inputs, outputs).AsTask().WaitAsync(Bound));
        await Task.Delay(200);
        Assert.Equal(launches, Volatile.Read(ref backend.Launches));
        Assert.All(outputs, x => Assert.Equal(5f, x));
    }

    [Fact]
    public async Task An_unwritable_output_with_FallbackToCpu_off_is_not_blamed_on_launch_limits()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend, fallbackToCpu: false);
        var bad = new ThrowingMemory(Width);
        Memory<float> badMemory = bad.Memory;
        bad.Throw = true;
        Exception error = await Assert.ThrowsAnyAsync<Exception>(() => processor.ProcessRowAsync(Row(1), badMemory).AsTask().WaitAsync(Bound));
        Assert.True(!error.ToString().Contains("launch limits"), "the caller is told its batch exceeds the GPU's launch limits: " + error.Message);
    }

    [Fact]
    public async Task ExecutionTimeout_on_single_rows_while_the_batch_runs_never_writes_afterwards()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend, Timeout.InfiniteTimeSpan, executionTimeout: TimeSpan.FromMilliseconds(100));
        backend.Running.Reset();
        float[][] outputs = [.. Enumerable.Range(0, 12).Select(_ => new float[Width])];
        Task[] calls = [.. Enumerable.Range(0, 12).Select(i => processor.ProcessRowAsync(Row(i), outputs[i]).AsTask())];
        foreach (Task call in calls)
        {
            await Assert.ThrowsAnyAsync<Exception>(() => call.WaitAsync(Bound));
        }

        foreach (float[] output in outputs)
        {
            Array.Fill(output, 8f);
        }

        backend.Running.Set();
        await DeviceRouterTests.WaitUntil(() => processor.GetDevices()[0].InFlightBatches == 0);
        await Task.Delay(200);
        Assert.All(outputs, o => Assert.All(o, x => Assert.Equal(8f, x)));
    }

    /// <summary>Random faults on three fake GPUs, random cancels, an ExecutionTimeout, all four call shapes.</summary>
    [Theory]
    [InlineData(11, 1)]
    [InlineData(12, 4)]
    [InlineData(13, 8)]
    [InlineData(14, 2)]
    [InlineData(15, 3)]
    [InlineData(16, 2, 3)]
    [InlineData(17, 5, 3)]
    [InlineData(18, 1, 3)]
    public async Task stress2_all_call_shapes_random_faults_each_caller_completes_with_its_result_or_an_error(int seed, int maxBatchSize, int slots = 2)
    {
        var random = new Random(seed);
        FakeBackend Faulty(int salt) => new()
        {
            FailSync = n => n > 0 && (int)(((uint)n * 2654435761u ^ (uint)(seed * 31 + salt)) % 61) == 0 ? new CudaException("CUDA_ERROR_LAUNCH_FAILED") : null,
        };

        var a = Faulty(1);
        var b = Faulty(2);
        await using IGpuRowProcessor<float> processor = Processor(a, TimeSpan.FromSeconds(5), maxBatchSize: maxBatchSize, second: b, slots: slots,
            maxConcurrentBatches: 5, executionTimeout: TimeSpan.FromMilliseconds(seed % 2 == 0 ? 40 : 2000));
        IBatchProcessor<ReadOnlyMemory<float>, float[]> plain = processor;
        const int Callers = 600;
        var tasks = new Task[Callers];
        var settled = new List<(float[] Buffer, float Sentinel)>[Callers];
        var problems = new System.Collections.Concurrent.ConcurrentQueue<string>();
        int successes = 0, failures = 0;
        for (int i = 0; i < Callers; i++)
        {
            int k = i;
            int shape = random.Next(4);
            int rows = random.Next(1, 2 * maxBatchSize + 2);
            var cts = new CancellationTokenSource();
            if (random.Next(3) == 0)
            {
                cts.CancelAfter(random.Next(0, 20));
            }

            settled[k] = [];
            float[][] rowInputs = [.. Enumerable.Range(0, rows).Select(r => Row(k * 100 + r))];
            tasks[k] = Task.Run(async () =>
            {
                float[] block = [.. rowInputs.SelectMany(r => r)];
                float[] outBlock = new float[block.Length];
                float[] one = new float[Width];
                try
                {
                    switch (shape)
                    {
                        case 0:
                            await processor.ProcessRowAsync(rowInputs[0], one, default, cts.Token);
                            if (!one.SequenceEqual(Doubled(rowInputs[0])))
                            {
                                problems.Enqueue($"caller {k}: row result wrong [{string.Join(",", one)}]");
                            }

                            break;
                        case 1:
                            await processor.ProcessRowsAsync(block, outBlock, default, cts.Token);
                            if (!outBlock.SequenceEqual(block.Select(x => x * 2)))
                            {
                                problems.Enqueue($"caller {k}: rows result wrong");
                            }

                            break;
                        case 2:
                            float[] r = await plain.ProcessAsync(rowInputs[0], cts.Token);
                            if (!r.SequenceEqual(Doubled(rowInputs[0])))
                            {
                                problems.Enqueue($"caller {k}: array result wrong");
                            }

                            break;
                        default:
                            ReadOnlyMemory<float>[] ins = [.. rowInputs.Select(x => (ReadOnlyMemory<float>)x)];
                            float[][] outs = new float[rows][];
                            try
                            {
                                await plain.ProcessManyAsync(ins, outs, default, cts.Token);
                            }
                            catch (BatchExecutionException bex) when (bex.ItemFailures.Count > 0)
                            {
                                var failedRows = new HashSet<int>(bex.ItemFailures.SelectMany(f => Enumerable.Range(f.StartIndex, f.Count)));
                                for (int j = 0; j < rows; j++)
                                {
                                    if (!failedRows.Contains(j) && (outs[j] is null || !outs[j].SequenceEqual(Doubled(rowInputs[j]))))
                                    {
                                        problems.Enqueue($"caller {k}: many, row {j} of a part that succeeded not handed out correctly");
                                    }
                                }

                                throw;
                            }

                            for (int j = 0; j < rows; j++)
                            {
                                if (outs[j] is null || !outs[j].SequenceEqual(Doubled(rowInputs[j])))
                                {
                                    problems.Enqueue($"caller {k}: many result {j} wrong");
                                }
                            }

                            break;
                    }

                    Interlocked.Increment(ref successes);
                }
                catch (Exception ex) when (ex is OperationCanceledException or TimeoutException or BatchExecutionException or ObjectDisposedException)
                {
                    Interlocked.Increment(ref failures);
                    Array.Fill(one, -1f);
                    Array.Fill(outBlock, -1f);
                    lock (settled[k])
                    {
                        settled[k].Add((one, -1f));
                        settled[k].Add((outBlock, -1f));
                    }
                }
                catch (Exception ex)
                {
                    Interlocked.Increment(ref failures);
                    problems.Enqueue($"caller {k} shape {shape}: unexpected {ex.GetType().Name}: {ex.Message}");
                }
            });
            if (random.Next(6) == 0)
            {
                await Task.Delay(random.Next(0, 3));
            }
        }

        Task all = Task.WhenAll(tasks);
        await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(60)));
        int pending = tasks.Count(t => !t.IsCompleted);
        Assert.True(pending == 0, $"{pending} callers never completed");
        Assert.Equal(Callers, successes + failures);
        await Task.Delay(500);
        for (int i = 0; i < Callers; i++)
        {
            foreach ((float[] buffer, float sentinel) in settled[i])
            {
                if (buffer.Any(x => x != sentinel))
                {
                    problems.Enqueue($"caller {i}: buffer written after its call failed");
                }
            }
        }

        Assert.True(problems.IsEmpty, $"{problems.Count} problem(s), successes {successes}, failures {failures}:\n" + string.Join("\n", problems.Take(15)));
        Assert.True(processor.GetDevices().Count(d => !d.IsHealthy) > 0, "no stream fault was exercised");
        Assert.True(failures > 0 && successes > 0, $"successes {successes}, failures {failures}");
    }

    [Fact]
    public async Task One_pending_GetResult_misuse_does_not_fail_the_next_innocent_call_on_that_thread()
    {
        var backend = new FakeBackend();
        await using IGpuRowProcessor<float> processor = Processor(backend);
        backend.Running.Reset();
        ValueTask misused = processor.ProcessRowAsync(Row(1), new float[Width]);
        Assert.Throws<InvalidOperationException>(() => misused.GetAwaiter().GetResult());
        var failed = new List<string>();
        for (int i = 0; i < 40; i++)
        {
            float[] output = new float[Width];
            ValueTask call = processor.ProcessRowAsync(Row(i), output);
            if (i == 0)
            {
                backend.Running.Set();
            }

            try
            {
                await call.AsTask().WaitAsync(Bound);
                if (!output.SequenceEqual(Doubled(Row(i))))
                {
                    failed.Add($"call {i}: completed with [{string.Join(", ", output)}]");
                }
            }
            catch (Exception ex)
            {
                failed.Add($"call {i}: {ex.GetType().Name}");
            }
        }

        Assert.True(failed.Count == 0, $"{failed.Count} of 40 innocent calls after one misuse were hurt: " + string.Join("; ", failed));
    }

    [Theory]
    [InlineData(21)]
    [InlineData(22)]
    [InlineData(23)]
    public async Task DisposeAsync_in_the_middle_of_traffic_completes_every_caller_and_never_writes_afterwards(int seed)
    {
        var random = new Random(seed);
        var backend = new FakeBackend { FailSync = n => { if (n % 7 == 3) { Thread.Sleep(20); } return null; } };
        IGpuRowProcessor<float> processor = Processor(backend, TimeSpan.FromSeconds(5), maxBatchSize: 3, maxConcurrentBatches: 4,
            shutdownTimeout: TimeSpan.FromMilliseconds(random.Next(0, 60)));
        const int Callers = 300;
        var tasks = new Task[Callers];
        var problems = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var sentinels = new System.Collections.Concurrent.ConcurrentBag<float[]>();
        Task? dispose = null;
        for (int i = 0; i < Callers; i++)
        {
            int k = i;
            tasks[k] = Task.Run(async () =>
            {
                int rows = 1 + (k % 5);
                float[] inputs = [.. Enumerable.Range(0, rows).SelectMany(r => Row(k * 10 + r))];
                float[] outputs = new float[inputs.Length];
                try
                {
                    if (rows == 1)
                    {
                        await processor.ProcessRowAsync(inputs, outputs);
                    }
                    else
                    {
                        await processor.ProcessRowsAsync(inputs, outputs);
                    }

                    if (!outputs.SequenceEqual(inputs.Select(x => x * 2)))
                    {
                        problems.Enqueue($"caller {k}: wrong result");
                    }
                }
                catch (Exception ex) when (ex is ObjectDisposedException or BatchExecutionException or OperationCanceledException)
                {
                    Array.Fill(outputs, -3f);
                    sentinels.Add(outputs);
                }
                catch (Exception ex)
                {
                    problems.Enqueue($"caller {k}: unexpected {ex.GetType().Name}: {ex.Message}");
                }
            });
            if (i == Callers / 2)
            {
                dispose = processor.DisposeAsync().AsTask();
            }
        }

        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(30));
        await dispose!.WaitAsync(TimeSpan.FromSeconds(30));
        await Task.Delay(300);
        foreach (float[] s in sentinels)
        {
            if (s.Any(x => x != -3f))
            {
                problems.Enqueue("a buffer was written after its call failed");
            }
        }

        Assert.True(problems.IsEmpty, string.Join("\n", problems.Take(15)));
    }

    [Fact]
    public async Task A_launch_that_overran_LaunchTimeout_but_finished_is_released_at_DisposeAsync()
    {
        var backend = new FakeBackend { FailSync = n => { if (n == 1) { Thread.Sleep(700); } return null; } };
        IGpuRowProcessor<float> processor = Processor(backend, TimeSpan.FromMilliseconds(200));
        float[] output = new float[Width];
        await processor.ProcessRowAsync(Row(1), output).AsTask().WaitAsync(Bound); // watchdog fails it; rerun on the CPU
        Assert.Equal(Doubled(Row(1)), output);
        Assert.Contains("LaunchTimeout", processor.GetDevices()[0].FaultReason);
        await Task.Delay(1000); // the slow launch has finished: the device is idle, nothing uses its memory
        await processor.DisposeAsync().AsTask().WaitAsync(Bound);
        await Task.Delay(300);

        object inner = processor.GetType().GetField("_inner", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(processor)!;
        object router = inner.GetType().GetField("_router", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(inner)!;
        var gpus = (Array)router.GetType().GetField("_gpus", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(router)!;
        object device = gpus.GetValue(0)!.GetType().GetProperty("Device")!.GetValue(gpus.GetValue(0))!;
        var completer = (Thread)device.GetType().GetField("_completer", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(device)!;
        int streamsDisposed = backend.Streams.Sum(s => Volatile.Read(ref s.Disposed));
        Assert.True(!completer.IsAlive && streamsDisposed == backend.Streams.Count,
            $"after DisposeAsync: completion thread alive={completer.IsAlive}, streams disposed {streamsDisposed}/{backend.Streams.Count}, backend disposed {backend.Disposed}");
    }
}
