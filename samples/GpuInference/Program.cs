// Registers a dense-layer row kernel with device-resident weights, runs thousands of concurrent callers, and prints
// the device used, throughput, mean batch size and latency percentiles; then sends its 64 input rows as one multi-row call.
// usage: GpuInference [--seconds 2] [--callers 2000] [--width 256] [--device auto|cuda|cpu|ilgpu-cpu]
using System.Diagnostics;
using Batching;
using Batching.Ilgpu;
using GpuInference;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

double seconds = Arg("--seconds", 2.0);
int callers = (int)Arg("--callers", 2000);
int width = (int)Arg("--width", 256);
string device = ArgText("--device", "auto");

var random = new Random(42);
float[] weights = new float[(width * width) + width];
for (int i = 0; i < weights.Length; i++)
{
    weights[i] = (float)((random.NextDouble() - 0.5) / Math.Sqrt(width));
}

var services = new ServiceCollection();
services.AddLogging(logging => logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Information));
services.AddBatching().AddGpuRowProcessor<float, DenseRelu>(rows =>
{
    rows.InputWidth = width;
    rows.OutputWidth = width;
    rows.Parameters = weights; // uploaded once to every device
    rows.Device = device switch
    {
        "cuda" => GpuDevicePreference.Cuda,
        "cpu" => GpuDevicePreference.ManagedCpu,
        "ilgpu-cpu" => GpuDevicePreference.IlgpuCpu,
        _ => GpuDevicePreference.Auto,
    };
}, configure: o =>
{
    o.MaxBatchSize = 100;
    o.QueueCapacity = Math.Max(callers, 100);
});

await using ServiceProvider provider = services.BuildServiceProvider();
// Resolve at start-up: this compiles and warms the kernel, so no caller pays for it.
var processor = provider.GetRequiredService<IGpuRowProcessor<float>>();

float[][] inputs = Enumerable.Range(0, 64).Select(_ => Enumerable.Range(0, width).Select(_ => (float)random.NextDouble()).ToArray()).ToArray();
var latencies = new List<double>[callers];
long items = 0;
var clock = Stopwatch.StartNew();
var stopAt = TimeSpan.FromSeconds(seconds);
await Task.WhenAll(Enumerable.Range(0, callers).Select(async c =>
{
    var mine = latencies[c] = new List<double>();
    await Task.Yield();

    // Each caller owns its output row: the result is copied straight into it, so the loop allocates nothing per call.
    float[] output = new float[width];
    for (int n = 0; clock.Elapsed < stopAt; n++)
    {
        long start = Stopwatch.GetTimestamp();
        await processor.ProcessRowAsync(inputs[(c + n) % inputs.Length], output);
        mine.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        Interlocked.Increment(ref items);
    }
}));
double elapsed = clock.Elapsed.TotalSeconds;

double[] sorted = latencies.SelectMany(l => l).Order().ToArray();
IReadOnlyList<GpuDeviceStatus> devices = processor.GetDevices();
long batches = devices.Sum(d => d.CompletedBatches);
Console.WriteLine();
foreach (GpuDeviceStatus d in devices)
{
    Console.WriteLine($"device:          {d}");
}

Console.WriteLine($"layer:           {width} -> {width} dense ReLU, {callers} concurrent callers, {elapsed:F1} s");
Console.WriteLine($"throughput:      {items / elapsed:N0} items/s");
Console.WriteLine($"mean batch size: {(batches == 0 ? 0 : (double)items / batches):F1} (MaxBatchSize 100)");
Console.WriteLine($"latency:         p50 {Percentile(0.50):F2} ms, p99 {Percentile(0.99):F2} ms");

// One request of many rows: ProcessRowsAsync takes them as one row-major block and writes their outputs into another
// (split across batches when there are more than MaxBatchSize). A block that is not whole rows fails the call before
// any row is queued. The timeout bounds how long the rows may wait in the queue.
float[] block = [.. inputs.SelectMany(row => row)];
float[] blockOutputs = new float[inputs.Length * width];
await processor.ProcessRowsAsync(block, blockOutputs, new RequestOptions(priority: 0, timeout: TimeSpan.FromSeconds(10)));
float worst = 0;
for (int i = 0; i < inputs.Length; i++)
{
    float[] single = await processor.ProcessAsync(inputs[i]); // the convenient form: a new array per call
    for (int j = 0; j < width; j++)
    {
        worst = Math.Max(worst, Math.Abs(single[j] - blockOutputs[(i * width) + j]));
    }
}

Console.WriteLine($"multi-row call:  {inputs.Length} rows in one ProcessRowsAsync call; largest difference from one call per row: {worst:G3}");

double Percentile(double p) => sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];

double Arg(string name, double fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length && double.TryParse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture, out double v) ? v : fallback;
}

string ArgText(string name, string fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}
