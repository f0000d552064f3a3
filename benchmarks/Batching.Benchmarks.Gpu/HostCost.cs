// Host cost per item on the CUDA path with no device time: the library's real stream device (slots, staging, the
// completion thread, the router, the engine) over a backend whose "launch" does nothing, against the hand-written
// batcher a user would otherwise write over the same fake device, in the same run. Measures host CPU per item (process
// CPU time / items), bytes allocated per item and GC counts, sweeping batches in flight.
// usage: Batching.Benchmarks.Gpu --host-cost [--seconds 3] [--callers 1000] [--batch 100] [--width 256] [--out file.md]
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Batching;
using Batching.Ilgpu;
using Batching.Ilgpu.Internal;
using GpuInference;

internal static class HostCost
{
    private sealed record Result(string Name, int InFlight, double ItemsPerSecond, double CpuNsPerItem, double BytesPerItem, double MeanBatch, int Gen0, int Gen1, int Gen2);

    public static async Task<string> RunAsync(double seconds, int callers, int batch, int width)
    {
        var random = new Random(1);
        float[][] rows = [.. Enumerable.Range(0, 64).Select(_ => Enumerable.Range(0, width).Select(_ => (float)random.NextDouble()).ToArray())];
        var results = new List<Result>();
        if (Environment.GetEnvironmentVariable("HOST_COST_PROFILE") is { } profile)
        {
            // For a profiler: one variant only, the library's row path at the given number in flight.
            await Library("library, ProcessRowAsync into caller buffers", int.Parse(profile, System.Globalization.CultureInfo.InvariantCulture), rows, seconds, callers, batch, width, arrays: false);
            return "";
        }

        foreach (int inFlight in new[] { 2, 3, 6, 8 })
        {
            results.Add(await Library($"library, ProcessRowAsync into caller buffers", inFlight, rows, seconds, callers, batch, width, arrays: false));
        }

        results.Add(await Library("library, ProcessAsync returning T[]", 3, rows, seconds, callers, batch, width, arrays: true));
        results.Add(await HandWritten(3, rows, seconds, callers, batch, width));
        results.Add(await EngineAlone(3, seconds, callers, batch));

        var table = new System.Text.StringBuilder();
        table.AppendLine($"| variant | in flight | items/s | host CPU per item | allocated per item | mean batch | gen0 / gen1 / gen2 GCs |");
        table.AppendLine("|---|---|---|---|---|---|---|");
        foreach (Result r in results)
        {
            table.AppendLine($"| {r.Name} | {r.InFlight} | {r.ItemsPerSecond:N0} | {r.CpuNsPerItem:F0} ns | {r.BytesPerItem:F1} B | {r.MeanBatch:F1} | {r.Gen0} / {r.Gen1} / {r.Gen2} |");
        }

        Result best = results.Take(4).MinBy(r => r.CpuNsPerItem)!;
        Result three = results[1];
        Result baseline = results[^2];
        Result floor = results[^1];
        table.AppendLine();
        table.AppendLine($"library (3 in flight) vs hand-written: {three.ItemsPerSecond / baseline.ItemsPerSecond:F2}x throughput, {three.CpuNsPerItem / baseline.CpuNsPerItem:F2}x host CPU per item.");
        table.AppendLine($"the core engine alone (no-op handler, no device, no rows) costs {floor.CpuNsPerItem:F0} ns per item with the same callers: the floor under any backend; the row path adds {three.CpuNsPerItem - floor.CpuNsPerItem:F0} ns.");
        table.AppendLine($"target <= 250 ns host CPU per item at batch {batch}: {(best.CpuNsPerItem <= 250 ? "PASS" : "FAIL")} (best {best.CpuNsPerItem:F0} ns, {best.InFlight} in flight; 3 in flight {three.CpuNsPerItem:F0} ns)");
        table.AppendLine($"target 0 B allocated per item: {(three.BytesPerItem < 1 ? "PASS" : "FAIL")} ({three.BytesPerItem:F2} B per item at 3 in flight)");
        return table.ToString();
    }

    private static async Task<Result> Library(string name, int inFlight, float[][] rows, double seconds, int callers, int batch, int width, bool arrays)
    {
        var backend = new NoDeviceBackend();
        await using IGpuRowProcessor<float> processor = GpuBatchProcessor.CreateRowsCore(
            new GpuRowOptions<float> { InputWidth = width, OutputWidth = width, Parameters = new float[(width * width) + width], Device = GpuDevicePreference.ManagedCpu, ValidateKernelWithoutCuda = false },
            default(DenseRelu), new BatchingOptions { MaxBatchSize = batch, QueueCapacity = Math.Max(batch, callers) }, null, null,
            (program, max, _) => ([StreamDevice<RowCall<float>, RowWritten, float, float>.Create("no-device", GpuDeviceKind.Cuda, backend, program, max, inFlight, TimeSpan.FromSeconds(10))], null));

        async Task Caller(int c, Func<bool> running, Action<int> done)
        {
            await Task.Yield();
            float[] output = new float[width];
            int n = 0;
            for (int i = c; running(); i++, n++)
            {
                if (arrays)
                {
                    _ = await processor.ProcessAsync(rows[i % rows.Length]);
                }
                else
                {
                    await processor.ProcessRowAsync(rows[i % rows.Length], output);
                }
            }

            done(n);
        }

        return await Measure($"{name}", inFlight, seconds, callers, Caller, () => processor.GetDevices().Sum(d => d.CompletedBatches));
    }

    /// <summary>The core engine with a no-op handler and int items, the same callers and batch size: what any backend pays.</summary>
    private static async Task<Result> EngineAlone(int slots, double seconds, int callers, int batch)
    {
        long batches = 0;
        await using IBatchProcessor<int, int> processor = BatchProcessor.Create<int, int>((inputs, outputs, _) =>
        {
            inputs.Span.CopyTo(outputs.Span);
            Interlocked.Increment(ref batches);
            return default;
        }, new BatchingOptions { MaxBatchSize = batch, QueueCapacity = Math.Max(batch, callers), MaxConcurrentBatches = slots });

        async Task Caller(int c, Func<bool> running, Action<int> done)
        {
            await Task.Yield();
            int n = 0;
            for (int i = c; running(); i++, n++)
            {
                _ = await processor.ProcessAsync(i);
            }

            done(n);
        }

        return await Measure("core engine alone: no-op handler, int items (floor)", slots, seconds, callers, Caller, () => Interlocked.Read(ref batches));
    }

    /// <summary>What a user would write: a channel of (row, output, completion), one consumer per stream that takes up
    /// to a batch, packs it into staging, "launches" and unpacks into the callers' buffers.</summary>
    private static async Task<Result> HandWritten(int inFlight, float[][] rows, double seconds, int callers, int batch, int width)
    {
        var channel = Channel.CreateBounded<(float[] Input, float[] Output, TaskCompletionSource Done)>(new BoundedChannelOptions(Math.Max(batch, callers)) { SingleWriter = false });
        long batches = 0;
        var backend = new NoDeviceBackend();
        Task[] consumers = [.. Enumerable.Range(0, inFlight).Select(_ => Task.Run(async () =>
        {
            IDeviceStream<float, float> stream = backend.CreateStream((long)batch * width, (long)batch * width);
            var taken = new List<(float[] Input, float[] Output, TaskCompletionSource Done)>(batch);
            while (await channel.Reader.WaitToReadAsync())
            {
                while (taken.Count < batch && channel.Reader.TryRead(out var item))
                {
                    item.Input.CopyTo(stream.StagingIn.Slice(taken.Count * width, width));
                    taken.Add(item);
                }

                stream.Enqueue(taken.Count, taken.Count * width, taken.Count * width);
                stream.Synchronize();
                for (int i = 0; i < taken.Count; i++)
                {
                    stream.StagingOut.Slice(i * width, width).CopyTo(taken[i].Output);
                    taken[i].Done.TrySetResult();
                }

                Interlocked.Increment(ref batches);
                taken.Clear();
            }
        }))];

        async Task Caller(int c, Func<bool> running, Action<int> done)
        {
            await Task.Yield();
            float[] output = new float[width];
            int n = 0;
            for (int i = c; running(); i++, n++)
            {
                var completion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                await channel.Writer.WriteAsync((rows[i % rows.Length], output, completion));
                await completion.Task;
            }

            done(n);
        }

        Result result = await Measure("hand-written Channel + TCS batcher (same fake device)", inFlight, seconds, callers, Caller, () => Interlocked.Read(ref batches));
        channel.Writer.Complete();
        await Task.WhenAll(consumers);
        return result;
    }

    private static async Task<Result> Measure(string name, int inFlight, double seconds, int callers, Func<int, Func<bool>, Action<int>, Task> caller, Func<long> batches)
    {
        // Warm-up, then the measured run; every caller stops at the deadline after its current call.
        await RunFor(TimeSpan.FromSeconds(Math.Min(1, seconds / 3)));
        GC.Collect();
        GC.WaitForPendingFinalizers();
        using var process = Process.GetCurrentProcess();
        process.Refresh();
        TimeSpan cpuBefore = process.TotalProcessorTime;
        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        int[] gcBefore = [GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)];
        long batchesBefore = batches();
        var clock = Stopwatch.StartNew();
        long items = await RunFor(TimeSpan.FromSeconds(seconds));
        double elapsed = clock.Elapsed.TotalSeconds;
        process.Refresh();
        double cpu = (process.TotalProcessorTime - cpuBefore).TotalSeconds;
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        long ran = batches() - batchesBefore;
        var r = new Result(name, inFlight, items / elapsed, cpu * 1e9 / items, (double)allocated / items, ran == 0 ? 0 : (double)items / ran,
            GC.CollectionCount(0) - gcBefore[0], GC.CollectionCount(1) - gcBefore[1], GC.CollectionCount(2) - gcBefore[2]);
        Console.WriteLine($"  {r.Name}, {r.InFlight} in flight: {r.ItemsPerSecond:N0} items/s, {r.CpuNsPerItem:F0} ns CPU/item, {r.BytesPerItem:F1} B/item, mean batch {r.MeanBatch:F1}");
        return r;

        async Task<long> RunFor(TimeSpan duration)
        {
            // A flag, not a clock read per call: the harness itself should cost next to nothing per item.
            long total = 0;
            var stop = new StrongBox<bool>();
            Task[] running = [.. Enumerable.Range(0, callers).Select(c => Task.Run(() => caller(c, () => !Volatile.Read(ref stop.Value), n => Interlocked.Add(ref total, n))))];
            await Task.Delay(duration);
            Volatile.Write(ref stop.Value, true);
            await Task.WhenAll(running);
            return total;
        }
    }

    /// <summary>A device that takes no time: launches do nothing, and a stream is always finished.</summary>
    private sealed class NoDeviceBackend : IDeviceBackend<float, float>
    {
        public void Bind()
        {
        }

        public IDeviceStream<float, float> CreateStream(long inputLength, long outputLength) => new Stream(inputLength, outputLength);

        public void SuppressFinalizers()
        {
        }

        public void Dispose()
        {
        }

        private sealed class Stream(long inputLength, long outputLength) : IDeviceStream<float, float>
        {
            private readonly float[] _in = GC.AllocateArray<float>((int)inputLength, pinned: true);
            private readonly float[] _out = GC.AllocateArray<float>((int)outputLength, pinned: true);

            public Span<float> StagingIn => _in;

            public ReadOnlySpan<float> StagingOut => _out;

            public void Enqueue(int count, int inputLength, int outputLength)
            {
            }

            public void Synchronize()
            {
            }

            public void SuppressFinalizers()
            {
            }

            public void Dispose()
            {
            }
        }
    }
}
