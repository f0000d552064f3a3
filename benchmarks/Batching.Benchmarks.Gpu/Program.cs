// GPU benchmark, one process: the raw synchronous pageable loop, the raw pinned pipelined loop (3 in flight), and the
// library end to end with many concurrent callers (2, 3, 6 and 8 batches in flight), all with the same generated
// kernel, then a table with ratios, host CPU per item and GC counts. The raw loops' table is printed and saved before
// the library stage starts, so a failing library stage cannot lose it.
// Without CUDA it says so and runs a tiny smoke version (ILGPU's CPU accelerator for the raw loops, the managed CPU
// path for the library) so that this keeps compiling and running.
// usage: Batching.Benchmarks.Gpu [--seconds 3] [--callers 4000] [--batch 100] [--width 256] [--out results.md]
//        Batching.Benchmarks.Gpu --host-cost [...]   (no device needed: see HostCost.cs)
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
int outIndex = Array.IndexOf(args, "--out");
string outPath = outIndex >= 0 && outIndex + 1 < args.Length ? args[outIndex + 1] : "gpu-benchmark.md";

if (args.Contains("--host-cost"))
{
    callers = (int)Arg("--callers", 1000);
    string header = $"# Host cost per item, fake device (no device time)\n\n{DateTime.UtcNow:yyyy-MM-dd}; {Environment.ProcessorCount} cores; {callers} callers; batch {batch}; width {width}; {seconds} s per run\n\n";
    Console.WriteLine(header);
    string table = await HostCost.RunAsync(seconds, callers, batch, width);
    Console.WriteLine(table);
    File.WriteAllText(outPath, header + table);
    return;
}

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

// The raw loops' numbers first, printed and saved, so that a failing library stage cannot lose them.
string Table(IEnumerable<(string Name, double ItemsPerSecond, double MicrosPerBatch, double MeanBatch)> rows, double baselineRate, double pinnedRate) =>
    "| variant | per batch | mean batch | items/s | vs sync pageable | vs pinned pipelined |\n|---|---|---|---|---|---|\n" +
    string.Concat(rows.Select(r => $"| {r.Name} | {r.MicrosPerBatch:F1} µs | {r.MeanBatch:F1} | {r.ItemsPerSecond:N0} | {r.ItemsPerSecond / baselineRate:F2}x | {r.ItemsPerSecond / pinnedRate:P0} |\n"));
string preamble = $"device: {(cuda ? "CUDA " + card : "ILGPU CPU accelerator / managed CPU (smoke run)")}; {width}->{width} dense ReLU; batch {batch}; {callers} callers; {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC\n\n";
Console.WriteLine();
Console.WriteLine(Table(results, results[0].ItemsPerSecond, results[1].ItemsPerSecond));
File.WriteAllText(outPath, preamble + "raw loops (library stage not run yet)\n\n" + Table(results, results[0].ItemsPerSecond, results[1].ItemsPerSecond));

// 3. The library end to end: many concurrent callers, MaxBatchSize = batch, writing into their own buffers; batches
// in flight swept. Host CPU per item is process CPU time over items (callers' loops included).
var hostCosts = new List<string>();
foreach (int inFlight in new[] { 2, 3, 6, 8 })
{
    try
    {
        await using IGpuRowProcessor<float> processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(
            new GpuRowOptions<float> { InputWidth = width, OutputWidth = width, Parameters = weights, Device = cuda ? GpuDevicePreference.Cuda : GpuDevicePreference.ManagedCpu, MaxBatchesInFlightPerDevice = inFlight },
            default, new BatchingOptions { MaxBatchSize = batch, QueueCapacity = Math.Max(batch, callers) });
        ReadOnlyMemory<float>[] rows = Enumerable.Range(0, batch).Select(i => new ReadOnlyMemory<float>(input, i * width, width)).ToArray();
        long items = 0;
        async Task RunFor(TimeSpan duration)
        {
            var clock = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, callers).Select(async c =>
            {
                await Task.Yield();
                float[] output = new float[width];
                for (int n = c; clock.Elapsed < duration; n++)
                {
                    await processor.ProcessRowAsync(rows[n % rows.Length], output);
                    Interlocked.Increment(ref items);
                }
            }));
        }

        await RunFor(TimeSpan.FromSeconds(seconds / 4)); // warm-up
        items = 0;
        GC.Collect();
        long batchesBefore = processor.GetDevices().Sum(d => d.CompletedBatches);
        using var process = Process.GetCurrentProcess();
        TimeSpan cpuBefore = process.TotalProcessorTime;
        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        int gen0 = GC.CollectionCount(0), gen1 = GC.CollectionCount(1), gen2 = GC.CollectionCount(2);
        var sw = Stopwatch.StartNew();
        await RunFor(TimeSpan.FromSeconds(seconds));
        double elapsed = sw.Elapsed.TotalSeconds;
        process.Refresh();
        double cpuNs = (process.TotalProcessorTime - cpuBefore).TotalSeconds * 1e9 / Math.Max(1, items);
        double bytes = (double)(GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore) / Math.Max(1, items);
        long batches = processor.GetDevices().Sum(d => d.CompletedBatches) - batchesBefore;
        double meanBatch = batches == 0 ? 0 : (double)items / batches;
        results.Add(($"library, {callers} callers, {inFlight} in flight", items / elapsed, batches == 0 ? 0 : elapsed * 1e6 / batches, meanBatch));
        hostCosts.Add($"| {inFlight} | {items / elapsed:N0} | {cpuNs:F0} ns | {bytes:F1} B | {GC.CollectionCount(0) - gen0} / {GC.CollectionCount(1) - gen1} / {GC.CollectionCount(2) - gen2} |");
        Console.WriteLine($"library, {inFlight} in flight: {items / elapsed:N0} items/s; devices: {string.Join("; ", processor.GetDevices())}");
    }
    catch (Exception ex)
    {
        Console.WriteLine($"library, {inFlight} in flight: FAILED: {ex}");
        hostCosts.Add($"| {inFlight} | FAILED: {ex.GetType().Name}: {ex.Message} | | | |");
    }
}

double baseline = results[0].ItemsPerSecond;
double pinned = results[1].ItemsPerSecond;
double bestLibrary = results.Skip(2).Select(r => r.ItemsPerSecond).DefaultIfEmpty(0).Max();
string verdict = cuda
    ? $"targets (issue 14): best library >= 3x sync pageable: {(bestLibrary >= 3 * baseline ? "met" : "NOT met")} ({bestLibrary / baseline:F2}x); >= 60% of pinned pipelined: {(bestLibrary >= 0.6 * pinned ? "met" : "NOT met")} ({bestLibrary / pinned:P0})"
    : "targets not evaluated: no CUDA device (CPU smoke run).";
string report = preamble + Table(results, baseline, pinned) + "\n| library in flight | items/s | host CPU per item | allocated per item | gen0 / gen1 / gen2 GCs |\n|---|---|---|---|---|\n" +
    string.Join("\n", hostCosts) + "\n\n" + verdict + "\n";
Console.WriteLine();
Console.WriteLine(report);
File.WriteAllText(outPath, report);

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
