using System.Diagnostics;
using System.Globalization;
using HdrHistogram;

namespace Batching.Benchmarks.Curves;

/// <summary>A simulated device's cost: a batch of n items takes <c>FixedMicroseconds + PerItemMicroseconds·n</c>.</summary>
internal sealed record DeviceProfile(string Name, double FixedMicroseconds, double PerItemMicroseconds)
{
    public double ServiceMicroseconds(int items) => FixedMicroseconds + PerItemMicroseconds * items;

    /// <summary>Capacity: the most requests per second the device serves, in full batches of MaxBatchSize.</summary>
    public double CapacityPerSecond => CurveSweep.MaxBatchSize / ServiceMicroseconds(CurveSweep.MaxBatchSize) * 1e6;
}

internal sealed record SweepSettings(DeviceProfile[] Profiles, double[] LoadPercents, TimeSpan WarmUp, TimeSpan Measure, bool Quick);

/// <summary>One measured point of a curve.</summary>
internal sealed record CurvePoint(
    string Profile, string Policy, double LoadPercent, double OfferedPerSecond, double AchievedPerSecond,
    double P50Us, double P99Us, double P999Us, double IdealP99Us, double MeanBatch, double DeviceBusyPercent,
    long Rejected, long Failed, long Unfinished, long Measured, double IssueLagP99Us, double AllocatedMBPerSecond, int Gen0Collections);

internal static partial class CurveSweep
{
    public const int MaxBatchSize = 100;
    public const int QueueCapacity = 2_000;
    public const int Seed = 20_261_127;

    /// <summary>How long the driver waits after the last arrival for the queue to drain. Past it, what is left is
    /// recorded with its latency so far (a lower bound) and counted as unfinished: an overloaded run without batching
    /// would otherwise take its whole queue's worth of service time per point.</summary>
    private static readonly TimeSpan DrainLimit = TimeSpan.FromSeconds(2);

    internal const long HistogramMax = 3_600_000_000_000; // one hour in nanoseconds

    public static readonly SweepSettings Full = new(
        [new("A", 200, 2), new("B", 20, 2)],
        [5, 10, 25, 50, 75, 90, 100, 110, 120],
        TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(1_000), Quick: false);

    public static readonly SweepSettings Quick = new(
        [new("A", 200, 2), new("B", 20, 2)],
        [10, 100],
        TimeSpan.FromMilliseconds(50), TimeSpan.FromMilliseconds(200), Quick: true);

    /// <summary>"none" is the same processor with MaxBatchSize 1: every request is its own handler call, through the same queue.</summary>
    private static readonly (string Name, Func<BatchingOptions> Options)[] Policies =
    [
        ("none", () => Options(FlushPolicy.Deadline, maxBatchSize: 1)),
        ("size", () => Options(FlushPolicy.Size(32, 64))),
        ("deadline", () => Options(FlushPolicy.Deadline)),
        ("adaptive", () => Options(FlushPolicy.Adaptive())),
    ];

    public static int Run(SweepSettings settings, string outputDirectory, string command)
    {
        Directory.CreateDirectory(outputDirectory);
        var total = Stopwatch.StartNew();
        var points = new List<CurvePoint>();
        var probes = new List<CurvePoint>();
        foreach (DeviceProfile profile in settings.Profiles)
        {
            for (int l = 0; l < settings.LoadPercents.Length; l++)
            {
                double load = settings.LoadPercents[l];
                double rate = profile.CapacityPerSecond * load / 100;
                foreach (var (name, options) in Policies)
                {
                    CurvePoint point = Measure(profile, name, options(), load, rate, settings, seed: Seed + 1000 * Array.IndexOf(settings.Profiles, profile) + l);
                    points.Add(point);
                    Print(point);
                }
            }

            // Low-load probe: 10% of what the device serves WITHOUT batching, where it idles most of the time.
            double probeRate = 0.1 / profile.ServiceMicroseconds(1) * 1e6;
            foreach (var (name, options) in Policies.Where(p => p.Name != "size"))
            {
                CurvePoint probe = Measure(profile, name, options(), probeRate / profile.CapacityPerSecond * 100, probeRate, settings, seed: Seed + 999);
                probes.Add(probe);
                Print(probe);
            }
        }

        total.Stop();
        string checks = CurveTargets.Check(settings, points, probes);
        Console.WriteLine();
        Console.WriteLine("Load-curve targets (issue 3; reported, never asserted):");
        Console.Write(checks);
        CurveReport.Write(settings, points, probes, checks, outputDirectory, command, total.Elapsed);
        Console.WriteLine($"Sweep took {total.Elapsed.TotalSeconds:0} s; results in {outputDirectory}");
        return 0;
    }

    private static BatchingOptions Options(FlushPolicy policy, int maxBatchSize = MaxBatchSize) => new()
    {
        MaxBatchSize = maxBatchSize,
        MaxDelay = BatchingOptions.DefaultMaxDelay,
        QueueCapacity = QueueCapacity,
        QueueFullMode = QueueFullMode.Reject,
        MaxConcurrentBatches = 1,
        ShutdownTimeout = TimeSpan.Zero,
        FlushPolicy = policy,
    };

    private static void Print(CurvePoint p) => Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{p.Profile} {p.Policy,-8} load {p.LoadPercent,6:0.0}%  offered {p.OfferedPerSecond,9:N0}/s  achieved {p.AchievedPerSecond,9:N0}/s  " +
        $"p50 {p.P50Us,9:N0} us  p99 {p.P99Us,9:N0} us  p99.9 {p.P999Us,9:N0} us  batch {p.MeanBatch,5:0.0}  rejected {p.Rejected,7}  unfinished {p.Unfinished,6}  lag p99 {p.IssueLagP99Us:N0} us  alloc {p.AllocatedMBPerSecond:N0} MB/s  gen0 {p.Gen0Collections}"));

    private static CurvePoint Measure(DeviceProfile profile, string policyName, BatchingOptions options, double load, double rate, SweepSettings settings, int seed)
    {
        double warm = settings.WarmUp.TotalSeconds, measure = settings.Measure.TotalSeconds;
        long[] schedule = PoissonSchedule(rate, warm + measure, seed, out int count);
        long from = (long)(warm * Stopwatch.Frequency), until = (long)((warm + measure) * Stopwatch.Frequency);
        var device = new SimulatedDevice(profile.FixedMicroseconds, profile.PerItemMicroseconds);
        BatchHandler<int, int> handler = (inputs, outputs, _) =>
        {
            ReadOnlySpan<int> source = inputs.Span;
            Span<int> target = outputs.Span;
            for (int i = 0; i < source.Length; i++)
            {
                target[i] = unchecked(source[i] * 2 + 1);
            }

            return device.RunAsync(source.Length);
        };

        var completions = new long[count];
        IBatchProcessor<int, int> processor = BatchProcessor.Create(handler, options);
        var driver = new OpenLoopDriver(processor, device, schedule, count, completions);
        long allocated0 = GC.GetTotalAllocatedBytes(precise: false);
        int gen0 = GC.CollectionCount(0);
        var runTime = Stopwatch.StartNew();
        driver.Run(DrainLimit, from, until);
        double allocatedMBPerSecond = (GC.GetTotalAllocatedBytes(precise: false) - allocated0) / 1e6 / runTime.Elapsed.TotalSeconds;
        gen0 = GC.CollectionCount(0) - gen0;
        long cutoff = Stopwatch.GetTimestamp();

        // Disposing fails whatever is left (ShutdownTimeout 0), which would overwrite the unfinished slots.
        completions = (long[])completions.Clone();
        processor.DisposeAsync().AsTask().GetAwaiter().GetResult();

        var latency = new LongHistogram(HistogramMax, 3); // nanoseconds
        long start = driver.StartTimestamp, completedInWindow = 0, rejected = 0, failed = 0, unfinished = 0, measured = 0;
        double nanosPerTick = 1e9 / Stopwatch.Frequency;
        for (int i = 0; i < count; i++)
        {
            long done = completions[i];
            if (done > 0 && done - start >= from && done - start < until)
            {
                completedInWindow++;
            }

            if (schedule[i] < from)
            {
                continue;
            }

            measured++;
            if (done == OpenLoopDriver.Rejected)
            {
                rejected++;
            }
            else if (done == OpenLoopDriver.Failed)
            {
                failed++;
            }
            else
            {
                if (done == 0)
                {
                    unfinished++;
                    done = cutoff;
                }

                latency.RecordValue(Math.Clamp((long)((done - start - schedule[i]) * nanosPerTick), 1, HistogramMax));
            }
        }

        int maxBatch = options.MaxBatchSize;
        double idealP99 = policyName is "adaptive" or "none" ? IdealGreedyP99(schedule, count, from, profile, maxBatch) : double.NaN;
        return new CurvePoint(profile.Name, policyName, load, rate, completedInWindow / measure,
            Us(latency, 50), Us(latency, 99), Us(latency, 99.9), idealP99,
            device.Batches == 0 ? 0 : (double)device.Items / device.Batches,
            device.BusyTicks / (measure * Stopwatch.Frequency) * 100,
            rejected, failed, unfinished, measured, driver.IssueLag.GetValueAtPercentile(99) / 1000.0, allocatedMBPerSecond, gen0);
    }

    internal static double Us(LongHistogram histogram, double percentile) =>
        histogram.TotalCount == 0 ? double.NaN : histogram.GetValueAtPercentile(percentile) / 1000.0;

    /// <summary>Seeded Poisson arrivals: exponential gaps at <paramref name="rate"/> per second, as Stopwatch ticks from the start.</summary>
    internal static long[] PoissonSchedule(double rate, double seconds, int seed, out int count)
    {
        var random = new Random(seed);
        var times = new List<long>((int)(rate * seconds * 1.1) + 16);
        double t = 0;
        while (true)
        {
            t += -Math.Log(1 - random.NextDouble()) / rate;
            if (t >= seconds)
            {
                break;
            }

            times.Add((long)(t * Stopwatch.Frequency));
        }

        count = times.Count;
        return [.. times];
    }

    /// <summary>
    /// The p99 an ideal, zero-overhead greedy batcher would reach on the same arrivals: whenever the device is free,
    /// everything queued (up to MaxBatchSize) goes at once. That is what Adaptive does with one batch slot, so the
    /// gap between this and the measured p99 is the library's own cost; for "none" it is an ideal FIFO server.
    /// </summary>
    private static double IdealGreedyP99(long[] schedule, int count, long from, DeviceProfile profile, int maxBatch)
    {
        var histogram = new LongHistogram(HistogramMax, 3);
        double tick = 1.0 / Stopwatch.Frequency, free = 0;
        int i = 0;
        while (i < count)
        {
            double begin = Math.Max(free, schedule[i] * tick);
            int k = 0;
            while (i + k < count && k < maxBatch && schedule[i + k] * tick <= begin)
            {
                k++;
            }

            double end = begin + profile.ServiceMicroseconds(k) / 1e6;
            for (int j = i; j < i + k; j++)
            {
                if (schedule[j] >= from)
                {
                    histogram.RecordValue(Math.Clamp((long)((end - schedule[j] * tick) * 1e9), 1, HistogramMax));
                }
            }

            free = end;
            i += k;
        }

        return Us(histogram, 99);
    }
}
