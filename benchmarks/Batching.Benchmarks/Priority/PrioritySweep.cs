using System.Diagnostics;
using System.Globalization;
using Batching.Benchmarks.Curves;
using HdrHistogram;

namespace Batching.Benchmarks.Priority;

/// <param name="Weights">BatchingOptions.PriorityWeights of the two-level processor; null keeps the default (2:1).</param>
/// <param name="QueueCapacity">BatchingOptions.QueueCapacity of both processors.</param>
internal sealed record PrioritySettings(DeviceProfile Device, double[] LoadPercents, TimeSpan WarmUp, TimeSpan Measure, TimeSpan DrainLimit, bool Quick,
    int[]? Weights = null, int QueueCapacity = PrioritySweep.DefaultQueueCapacity)
{
    private int Weight0 => Weights?[0] ?? 2;

    private int Weight1 => Weights?[1] ?? 1;

    /// <summary>Level 1's configured share while both levels have work: its weight over the sum (1/3 with the default 2:1).</summary>
    public double ConfiguredShare1 => (double)Weight1 / (Weight0 + Weight1);

    public string WeightsText => $"{Weight0}:{Weight1}{(Weights is null ? " (the default)" : "")}";
}

/// <summary>Queue wait of one priority level (or of every arrival, <see cref="Level"/> -1) at one point.</summary>
internal sealed record LevelWait(int Level, double OfferedPerSecond, double DispatchedPerSecond, double Share,
    double P50Us, double P99Us, double P999Us, long Measured, long Undispatched);

/// <summary>One measured point: a configuration ("priority": two levels; "fifo": one level) at one load.</summary>
/// <param name="BothHadWorkShare1">Level 1's share of the items dispatched in batches formed while both levels had work.</param>
/// <param name="ContendedShare1">Level 1's share of the items dispatched in batches after which both levels still had
/// items queued: the batches whose composition the fair share alone decided.</param>
internal sealed record PriorityPoint(string Config, double LoadPercent, LevelWait[] Levels,
    double BothHadWorkShare1, double BothHadWorkBatchPercent, double ContendedShare1, double ContendedBatchPercent,
    double MeanBatch, double DeviceBusyPercent, double IssueLagP99Us, long Failed, string Collections, double GcPauseMs)
{
    public LevelWait Level(int level) => Levels.First(l => l.Level == level);
}

/// <summary>
/// Priority under overload (issue 10): open-loop Poisson arrivals, half at priority 0 and half at priority 1, on a
/// simulated device with a known batch cost a + b·n, at several loads up to 120% of its capacity, with
/// <see cref="QueueFullMode.Wait"/>; and the same arrivals through a one-level (strict FIFO) processor. Per level it
/// measures the queue wait, arrival to the start of the item's batch (timed in the handler), and the share of the
/// items dispatched. Reports, never assertions.
/// </summary>
internal static class PrioritySweep
{
    public const int MaxBatchSize = CurveSweep.MaxBatchSize;

    /// <summary>Ten full batches, 20 ms of device work: overload shows as callers waiting for space, not as a deep queue.</summary>
    public const int DefaultQueueCapacity = 1_000;

    public const int Seed = 20_261_210;

    /// <summary>A GPU-like device: 1 ms per launch plus 10 µs per item; a full batch of 100 takes 2 ms, so capacity is
    /// 50,000 items/s, well inside what the 2-core host can issue and complete (the load curves' host limit is near 190,000/s).</summary>
    public static readonly DeviceProfile Device = new("P", 1_000, 10);

    public static readonly PrioritySettings Full = new(Device, [30, 60, 90, 120],
        TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(5), Quick: false);

    public static readonly PrioritySettings Quick = new(Device, [60, 120],
        TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1), Quick: true);

    public static int Run(string[] args, string command)
    {
        PrioritySettings settings = args.Contains("--quick") ? Quick : Full;
        if (Program.OptionValue(args, "--loads") is { } loads)
        {
            settings = settings with { LoadPercents = [.. loads.Split(',').Select(l => double.Parse(l, CultureInfo.InvariantCulture))] };
        }

        if (Program.OptionValue(args, "--seconds") is { } seconds)
        {
            settings = settings with { Measure = TimeSpan.FromSeconds(double.Parse(seconds, CultureInfo.InvariantCulture)) };
        }

        if (Program.OptionValue(args, "--warmup") is { } warmUp)
        {
            settings = settings with { WarmUp = TimeSpan.FromSeconds(double.Parse(warmUp, CultureInfo.InvariantCulture)) };
        }

        if (Program.OptionValue(args, "--weights") is { } weights)
        {
            // For investigation, e.g. --weights 4,1: a larger share for level 0.
            settings = settings with { Weights = [.. weights.Split(',').Select(w => int.Parse(w, CultureInfo.InvariantCulture))] };
        }

        if (Program.OptionValue(args, "--capacity") is { } capacity)
        {
            // For investigation: a queue too large to fill never makes a caller wait for space.
            settings = settings with { QueueCapacity = int.Parse(capacity, CultureInfo.InvariantCulture) };
        }

        string output = Program.OptionValue(args, "--out") ?? Paths.Results;
        var total = Stopwatch.StartNew();
        var points = new List<PriorityPoint>();
        for (int l = 0; l < settings.LoadPercents.Length; l++)
        {
            foreach (string config in new[] { "priority", "fifo" })
            {
                PriorityPoint point = Measure(settings, config, settings.LoadPercents[l], Seed + l);
                points.Add(point);
                Print(point);
            }
        }

        total.Stop();
        string checks = PriorityReport.Check(settings, points);
        Console.WriteLine();
        Console.WriteLine("Priority targets (issue 10; reported, never asserted):");
        Console.Write(checks);
        PriorityReport.Write(settings, points, checks, output, command, total.Elapsed);
        return 0;
    }

    private static void Print(PriorityPoint p)
    {
        foreach (LevelWait w in p.Levels)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{p.Config,-8} load {p.LoadPercent,5:0}%  {(w.Level < 0 ? "all" : $"level {w.Level}"),-7}  offered {w.OfferedPerSecond,8:N0}/s  dispatched {w.DispatchedPerSecond,8:N0}/s  share {w.Share,6:P1}  " +
                $"wait p50 {w.P50Us,9:N0} us  p99 {w.P99Us,9:N0} us  p99.9 {w.P999Us,9:N0} us  undispatched {w.Undispatched}"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{p.Config,-8} load {p.LoadPercent,5:0}%  level 1 share while both had work {p.BothHadWorkShare1:P1} ({p.BothHadWorkBatchPercent:0}% of batches), contended {p.ContendedShare1:P1} ({p.ContendedBatchPercent:0}% of batches)  " +
            $"batch {p.MeanBatch:0.0}  device busy {p.DeviceBusyPercent:0}%  lag p99 {p.IssueLagP99Us:N0} us  GCs {p.Collections} (paused {p.GcPauseMs:N0} ms)  failed {p.Failed}"));
    }

    private static BatchingOptions Options(string config, PrioritySettings settings) => new()
    {
        MaxBatchSize = MaxBatchSize,
        QueueCapacity = settings.QueueCapacity,
        QueueFullMode = QueueFullMode.Wait,
        MaxConcurrentBatches = 1,
        ShutdownTimeout = TimeSpan.Zero,
        PriorityLevels = config == "priority" ? 2 : 1,
        PriorityWeights = config == "priority" ? settings.Weights : null,
    };

    private static PriorityPoint Measure(PrioritySettings settings, string config, double load, int seed)
    {
        DeviceProfile profile = settings.Device;
        double warm = settings.WarmUp.TotalSeconds, measure = settings.Measure.TotalSeconds;
        double rate = profile.CapacityPerSecond * load / 100;
        long[] schedule = CurveSweep.PoissonSchedule(rate, warm + measure, seed, out int count);
        if (count >= 1 << 24)
        {
            throw new ArgumentException($"{count} arrivals: more than the 2^24 inputs the handler can map back to arrivals; shorten --seconds.");
        }

        // Same arrivals and the same level for each arrival in both configurations (FIFO ignores the level).
        var random = new Random(seed ^ 0x5EED);
        byte[] levels = new byte[count];
        for (int i = 0; i < count; i++)
        {
            levels[i] = (byte)random.Next(2);
        }

        long from = (long)(warm * Stopwatch.Frequency), until = (long)((warm + measure) * Stopwatch.Frequency);
        var device = new SimulatedDevice(profile.FixedMicroseconds, profile.PerItemMicroseconds);
        var dispatched = new long[count];
        var stats = new BatchStats();
        IBatchProcessor<int, int>? processor = null;
        BatchHandler<int, int> handler = (inputs, outputs, _) =>
        {
            // One batch at a time (MaxConcurrentBatches 1), so plain writes; read after the driver and the processor stopped.
            long now = Stopwatch.GetTimestamp();
            ReadOnlySpan<int> source = inputs.Span;
            Span<int> target = outputs.Span;
            int level1 = 0;
            for (int i = 0; i < source.Length; i++)
            {
                int id = source[i];
                dispatched[id] = now;
                level1 += levels[id];
                target[i] = unchecked(id * 2 + 1);
            }

            if (now >= device.CountFrom && now < device.CountUntil)
            {
                stats.Record(source.Length - level1, level1, config == "priority" ? processor!.GetLoad() : null);
            }

            return device.RunAsync(source.Length);
        };

        processor = BatchProcessor.Create(handler, Options(config, settings));
        var completions = new long[count];
        var driver = new OpenLoopDriver(processor, device, schedule, count, completions, config == "priority" ? levels : null);
        int[] collections0 = [GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)];
        TimeSpan paused0 = GC.GetTotalPauseDuration();
        driver.Run(settings.DrainLimit, from, until);
        string collections = string.Join(" / ", Enumerable.Range(0, 3).Select(g => GC.CollectionCount(g) - collections0[g]));
        double pausedMs = (GC.GetTotalPauseDuration() - paused0).TotalMilliseconds;
        long cutoff = Stopwatch.GetTimestamp();
        long failed = completions.Count(c => c is OpenLoopDriver.Failed or OpenLoopDriver.Rejected); // before shutdown fails the rest
        dispatched = (long[])dispatched.Clone(); // whatever shutdown does must not touch the measured timestamps
        processor.DisposeAsync().AsTask().GetAwaiter().GetResult();

        var histograms = new[] { new LongHistogram(CurveSweep.HistogramMax, 3), new LongHistogram(CurveSweep.HistogramMax, 3), new LongHistogram(CurveSweep.HistogramMax, 3) };
        var measured = new long[3];
        var undispatched = new long[3];
        long start = driver.StartTimestamp;
        double nanosPerTick = 1e9 / Stopwatch.Frequency;
        for (int i = 0; i < count; i++)
        {
            if (schedule[i] < from || schedule[i] >= until)
            {
                continue;
            }

            long done = dispatched[i];
            bool never = done == 0;
            long wait = Math.Clamp((long)(((never ? cutoff : done) - start - schedule[i]) * nanosPerTick), 1, CurveSweep.HistogramMax);
            foreach (int k in new[] { levels[i], 2 })
            {
                histograms[k].RecordValue(wait);
                measured[k]++;
                undispatched[k] += never ? 1 : 0;
            }
        }

        long[] items = [stats.Items0, stats.Items1, stats.Items0 + stats.Items1];
        LevelWait[] waits = [.. Enumerable.Range(0, 3).Select(k => new LevelWait(k == 2 ? -1 : k, measured[k] / measure, items[k] / measure,
            items[2] == 0 ? double.NaN : (double)items[k] / items[2],
            CurveSweep.Us(histograms[k], 50), CurveSweep.Us(histograms[k], 99), CurveSweep.Us(histograms[k], 99.9), measured[k], undispatched[k]))];
        return new PriorityPoint(config, load, waits,
            Share(stats.BothItems0, stats.BothItems1), Percent(stats.BothBatches, stats.Batches),
            Share(stats.ContendedItems0, stats.ContendedItems1), Percent(stats.ContendedBatches, stats.Batches),
            stats.Batches == 0 ? 0 : (double)items[2] / stats.Batches,
            device.BusyTicks / (measure * Stopwatch.Frequency) * 100,
            driver.IssueLag.GetValueAtPercentile(99) / 1000.0, failed, collections, pausedMs);
    }

    private static double Share(long items0, long items1) => items0 + items1 == 0 ? double.NaN : (double)items1 / (items0 + items1);

    private static double Percent(long part, long whole) => whole == 0 ? double.NaN : 100.0 * part / whole;

    /// <summary>What the handler saw in the measured window, per batch.</summary>
    private sealed class BatchStats
    {
        public long Batches, Items0, Items1;
        public long BothBatches, BothItems0, BothItems1;
        public long ContendedBatches, ContendedItems0, ContendedItems1;

        /// <param name="load">The processor's load as the batch starts (its items already taken), or null for one level.</param>
        public void Record(int items0, int items1, ProcessorLoad? load)
        {
            Batches++;
            Items0 += items0;
            Items1 += items1;
            if (load is not { } l)
            {
                return;
            }

            int queued0 = l.GetQueuedItems(0), queued1 = l.GetQueuedItems(1);
            if (items0 + queued0 > 0 && items1 + queued1 > 0)
            {
                BothBatches++;
                BothItems0 += items0;
                BothItems1 += items1;
            }

            if (queued0 > 0 && queued1 > 0)
            {
                ContendedBatches++;
                ContendedItems0 += items0;
                ContendedItems1 += items1;
            }
        }
    }
}
