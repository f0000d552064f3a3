// GPU benchmark, one process: the raw synchronous pageable loop, the raw pinned pipelined loop (3 in flight), and the
// library end to end with many concurrent callers, all with the same generated kernel, then a table with ratios.
// Without CUDA it says so and runs a tiny smoke version (ILGPU's CPU accelerator for the raw loops, the managed CPU
// path for the library) so that this keeps compiling and running.
// usage: Batching.Benchmarks.Gpu [--seconds 3] [--callers 4000] [--batch 100] [--width 256]
using System.Diagnostics;
using Batching;
using Batching.Ilgpu;
using Batching.Ilgpu.Internal;
using GpuInference;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

double seconds = Arg("--seconds", 3);
int callers = (int)Arg("--callers", 4000);
int batch = (int)Arg("--batch", 100);
int width = (int)Arg("--width", 256);

CudaDriver.EnsureResolver();
bool cuda;
string card;
using (Context probe = Context.Create(b => b.Cuda()))
{
    cuda = probe.GetCudaDevices().Count > 0;
    card = cuda ? probe.GetCudaDevices()[0].Name : "none";
}

if (!cuda)
{
    Console.WriteLine("No CUDA device: running the CPU smoke version (tiny sizes, numbers are not GPU results).");
    seconds = Math.Min(seconds, 0.5);
    callers = Math.Min(callers, 200);
    batch = Math.Min(batch, 10);
    width = Math.Min(width, 16);
}

var random = new Random(1);
float[] weights = Enumerable.Range(0, (width * width) + width).Select(_ => (float)(random.NextDouble() - 0.5) / 16).ToArray();
float[] input = Enumerable.Range(0, batch * width).Select(_ => (float)random.NextDouble()).ToArray();

Console.WriteLine($"device: {(cuda ? "CUDA " + card : "ILGPU CPU accelerator / managed CPU")}; {width}->{width} dense ReLU; batch {batch}; {DateTime.UtcNow:yyyy-MM-dd}");
var results = new List<(string Name, double ItemsPerSecond, double MicrosPerBatch, double MeanBatch)>();

using (Context context = cuda ? Context.Create(b => b.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O1)) : Context.Create(b => b.CPU().EnableAlgorithms()))
using (Accelerator accelerator = cuda ? context.CreateCudaAccelerator(0) : context.CreateCPUAccelerator(0))
{
    var kernel = accelerator.LoadAutoGroupedKernel<Index1D, DeviceRowBatch<float>, ArrayView<float>, DenseRelu>(KernelEntryPoints.Rows<float, DenseRelu>);
    using MemoryBuffer1D<float, Stride1D.Dense> parameters = accelerator.Allocate1D(weights);
    ArrayView<float> p = parameters.View.BaseView;

    // 1. Synchronous, pageable: copy in, launch, copy out, wait; one batch at a time.
    using (MemoryBuffer1D<float, Stride1D.Dense> dIn = accelerator.Allocate1D<float>(input.Length))
    using (MemoryBuffer1D<float, Stride1D.Dense> dOut = accelerator.Allocate1D<float>(batch * width))
    {
        float[] output = new float[batch * width];
        AcceleratorStream s = accelerator.DefaultStream;
        void Once()
        {
            dIn.View.CopyFromCPU(input);
            kernel(s, batch * width, new DeviceRowBatch<float>(dIn.View.BaseView, p, batch, width, width), dOut.View.BaseView, default);
            dOut.View.CopyToCPU(output);
            s.Synchronize();
        }

        results.Add(Measure("raw sync pageable", Once));
    }

    // 2. Page-locked staging, 3 streams, 3 batches in flight.
    {
        const int InFlight = 3;
        var streams = Enumerable.Range(0, InFlight).Select(_ => accelerator.CreateStream()).ToArray();
        var pinIn = Enumerable.Range(0, InFlight).Select(_ => accelerator.AllocatePageLocked1D<float>(input.Length)).ToArray();
        var pinOut = Enumerable.Range(0, InFlight).Select(_ => accelerator.AllocatePageLocked1D<float>(batch * width)).ToArray();
        var dIn = Enumerable.Range(0, InFlight).Select(_ => accelerator.Allocate1D<float>(input.Length)).ToArray();
        var dOut = Enumerable.Range(0, InFlight).Select(_ => accelerator.Allocate1D<float>(batch * width)).ToArray();
        var busy = new bool[InFlight];
        int next = 0;
        void Once()
        {
            int i = next;
            next = (next + 1) % InFlight;
            if (busy[i])
            {
                streams[i].Synchronize();
            }

            input.CopyTo(pinIn[i].Span);
            dIn[i].View.BaseView.CopyFrom(streams[i], pinIn[i].ArrayView);
            kernel(streams[i], batch * width, new DeviceRowBatch<float>(dIn[i].View.BaseView, p, batch, width, width), dOut[i].View.BaseView, default);
            dOut[i].View.BaseView.CopyTo(streams[i], pinOut[i].ArrayView);
            busy[i] = true;
        }

        results.Add(Measure("raw pinned, 3 in flight", Once, () => { foreach (var s in streams) { s.Synchronize(); } }));
        foreach (IDisposable d in dOut.Concat<IDisposable>(dIn).Concat(pinOut).Concat(pinIn).Concat(streams))
        {
            d.Dispose();
        }
    }
}

// 3. The library end to end: many concurrent callers, MaxBatchSize = batch.
{
    await using var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(
        new GpuRowOptions<float> { InputWidth = width, OutputWidth = width, Parameters = weights, Device = cuda ? GpuDevicePreference.Cuda : GpuDevicePreference.ManagedCpu, MaxBatchesInFlightPerDevice = 3 },
        default, new BatchingOptions { MaxBatchSize = batch, QueueCapacity = Math.Max(batch, callers) });
    ReadOnlyMemory<float>[] rows = Enumerable.Range(0, batch).Select(i => new ReadOnlyMemory<float>(input, i * width, width)).ToArray();
    long items = 0;
    async Task RunFor(TimeSpan duration)
    {
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, callers).Select(async c =>
        {
            await Task.Yield();
            for (int n = c; clock.Elapsed < duration; n++)
            {
                await processor.ProcessAsync(rows[n % rows.Length]);
                Interlocked.Increment(ref items);
            }
        }));
    }

    await RunFor(TimeSpan.FromSeconds(seconds / 4)); // warm-up
    items = 0;
    long batchesBefore = processor.GetDevices().Sum(d => d.CompletedBatches);
    var sw = Stopwatch.StartNew();
    await RunFor(TimeSpan.FromSeconds(seconds));
    double elapsed = sw.Elapsed.TotalSeconds;
    long batches = processor.GetDevices().Sum(d => d.CompletedBatches) - batchesBefore;
    double meanBatch = batches == 0 ? 0 : (double)items / batches;
    results.Add(($"library, {callers} callers", items / elapsed, batches == 0 ? 0 : elapsed * 1e6 / batches, meanBatch));
    Console.WriteLine($"library devices: {string.Join("; ", processor.GetDevices())}");
}

double baseline = results[0].ItemsPerSecond;
double pinned = results[1].ItemsPerSecond;
Console.WriteLine();
Console.WriteLine("| variant | per batch | mean batch | items/s | vs sync pageable | vs pinned pipelined |");
Console.WriteLine("|---|---|---|---|---|---|");
foreach (var r in results)
{
    Console.WriteLine($"| {r.Name} | {r.MicrosPerBatch:F1} µs | {r.MeanBatch:F1} | {r.ItemsPerSecond:N0} | {r.ItemsPerSecond / baseline:F2}x | {r.ItemsPerSecond / pinned:P0} |");
}

Console.WriteLine();
Console.WriteLine(cuda
    ? $"targets (issue 6): library >= 3x sync pageable: {(results[2].ItemsPerSecond >= 3 * baseline ? "met" : "NOT met")}; >= 60% of pinned pipelined: {(results[2].ItemsPerSecond >= 0.6 * pinned ? "met" : "NOT met")}"
    : "targets not evaluated: no CUDA device (CPU smoke run).");

(string, double, double, double) Measure(string name, Action once, Action? drain = null)
{
    for (int i = 0; i < 20; i++)
    {
        once();
    }

    drain?.Invoke();
    long n = 0;
    var sw = Stopwatch.StartNew();
    while (sw.Elapsed.TotalSeconds < seconds)
    {
        for (int i = 0; i < 10; i++, n++)
        {
            once();
        }
    }

    drain?.Invoke();
    double elapsed = sw.Elapsed.TotalSeconds;
    return (name, n * batch / elapsed, elapsed * 1e6 / n, batch);
}

double Arg(string name, double fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length && double.TryParse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture, out double v) ? v : fallback;
}
