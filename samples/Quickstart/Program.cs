// Quickstart: many concurrent callers share one "device" through a batch processor.
//
// The handler stands in for a GPU or a remote batch API: every call costs a fixed 200 µs
// (launch, round trip) plus 2 µs per item, so 100 items cost about as much as 2 items one by one.
// The sample runs the same load batched and unbatched and prints what batching buys.
using System.Diagnostics;
using Batching;
using Microsoft.Extensions.DependencyInjection;

const int Callers = 1_000;
TimeSpan duration = TimeSpan.FromSeconds(args.Length > 0 && double.TryParse(args[0], out double s) ? s : 1.5);

Console.WriteLine($"Batching quickstart: {Callers} concurrent callers, {duration.TotalSeconds:0.#} s per run, {Environment.ProcessorCount} cores");
Console.WriteLine($"Simulated device: {SimulatedDevice.FixedMicroseconds} µs per call + {SimulatedDevice.PerItemMicroseconds} µs per item");
Console.WriteLine();

Report batched = await RunAsync("batched (adaptive, up to 100 per call)", o => o.MaxBatchSize = 100); // Adaptive is the default policy
Report single = await RunAsync("unbatched (one item per call)", o => o.MaxBatchSize = 1);

Console.WriteLine();
Console.WriteLine($"Batching gave {batched.Throughput / single.Throughput:0.0}x the throughput with {single.P99 / batched.P99:0.0}x lower p99 latency.");

// One call can carry many items (an HTTP request with 250 inputs), with a priority and a queue timeout: the items are
// split across batches of up to 100 and the call completes once, every output at its input's index.
var manyDevice = new SimulatedDevice();
await using (var many = BatchProcessor.Create<float, float>(manyDevice.RunAsync, new BatchingOptions { MaxBatchSize = 100, PriorityLevels = 2 }))
{
    float[] inputs = [.. Enumerable.Range(0, 250).Select(i => (float)i)];
    var outputs = new float[inputs.Length];
    long start = Stopwatch.GetTimestamp();
    await many.ProcessManyAsync(inputs, outputs, new RequestOptions(priority: 1, timeout: TimeSpan.FromSeconds(1)));
    bool allRight = inputs.Select(SimulatedDevice.Compute).SequenceEqual(outputs);
    Console.WriteLine($"One ProcessManyAsync call of {inputs.Length} items: {manyDevice.Calls} batches, {Stopwatch.GetElapsedTime(start).TotalMilliseconds:0.0} ms, outputs {(allRight ? "all at their index" : "WRONG")}.");
}

async Task<Report> RunAsync(string name, Action<BatchingOptions> configure)
{
    var device = new SimulatedDevice();
    var services = new ServiceCollection();
    services.AddBatching().AddProcessor<float, float>(device.RunAsync, configure);
    await using var provider = services.BuildServiceProvider();
    var processor = provider.GetRequiredService<IBatchProcessor<float, float>>();

    var latencies = new List<double>[Callers];
    long completed = 0;
    var stopAt = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
    var workers = Enumerable.Range(0, Callers).Select(async caller =>
    {
        var mine = latencies[caller] = new List<double>();
        await Task.Yield();
        for (float x = caller; Stopwatch.GetTimestamp() < stopAt; x += Callers)
        {
            long start = Stopwatch.GetTimestamp();
            float y = await processor.ProcessAsync(x);
            mine.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            if (y != SimulatedDevice.Compute(x))
            {
                throw new InvalidOperationException($"caller {caller} got {y} for {x}");
            }

            Interlocked.Increment(ref completed);
        }
    }).ToArray();
    var clock = Stopwatch.StartNew();
    await Task.WhenAll(workers);
    clock.Stop();

    double[] all = latencies.SelectMany(l => l).Order().ToArray();
    var report = new Report(completed / clock.Elapsed.TotalSeconds, Percentile(all, 0.50), Percentile(all, 0.99));
    Console.WriteLine($"{name,-42} {report.Throughput,10:N0} req/s   mean batch {device.MeanBatchSize,5:0.0}   p50 {report.P50,6:0.00} ms   p99 {report.P99,6:0.00} ms");
    return report;
}

static double Percentile(double[] sorted, double q) => sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)(q * sorted.Length))];

internal sealed record Report(double Throughput, double P50, double P99);

/// <summary>A stand-in for a GPU: a fixed cost per call plus a small cost per item, spent on the calling thread.</summary>
internal sealed class SimulatedDevice
{
    public const int FixedMicroseconds = 200;
    public const int PerItemMicroseconds = 2;
    private long _calls;
    private long _items;

    public double MeanBatchSize => _calls == 0 ? 0 : (double)_items / _calls;

    public long Calls => _calls;

    public static float Compute(float x) => MathF.Sqrt(x) * 0.5f + 1f;

    public ValueTask RunAsync(ReadOnlyMemory<float> inputs, Memory<float> outputs, CancellationToken cancellationToken)
    {
        long until = Stopwatch.GetTimestamp() + (FixedMicroseconds + PerItemMicroseconds * inputs.Length) * Stopwatch.Frequency / 1_000_000;
        for (int i = 0; i < inputs.Length; i++)
        {
            outputs.Span[i] = Compute(inputs.Span[i]);
        }

        while (Stopwatch.GetTimestamp() < until)
        {
            Thread.SpinWait(20);
        }

        _calls++;
        _items += inputs.Length;
        return ValueTask.CompletedTask;
    }
}
