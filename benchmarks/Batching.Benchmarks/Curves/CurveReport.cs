using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using ScottPlot;

namespace Batching.Benchmarks.Curves;

/// <summary>Writes curves.md, curves.csv and one PNG per device profile, all from the same measured points.</summary>
internal static class CurveReport
{
    public static void Write(SweepSettings settings, List<CurvePoint> points, List<CurvePoint> probes, string checks,
        string directory, string command, TimeSpan took)
    {
        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder()
            .AppendLine("# Load curves: latency and throughput against offered load, per flush policy")
            .AppendLine()
            .AppendLine(inv, $"- Machine: 2-core dev VM ({Environment.ProcessorCount} logical CPUs, {Machine.Cpu()}, {RuntimeInformation.OSDescription}, .NET {Environment.Version})")
            .AppendLine(inv, $"- Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; the sweep took {took.TotalSeconds:0} s")
            .AppendLine(inv, $"- Command: `{command}`")
            .AppendLine(inv, $"- Commit: {Git.Describe()}")
            .AppendLine(inv, $"- Load average (1/5/15 min) at start: {Machine.LoadAverageAtStart}; at end: {Machine.LoadAverage()} (other work on the VM moves the numbers); process priority: {Machine.Priority} (as BenchmarkDotNet runs its benchmark processes)")
            .AppendLine()
            .AppendLine("Setup:")
            .AppendLine(inv, $"- Open-loop Poisson arrivals (seeded, seed {CurveSweep.Seed} + point index: every policy sees the same arrivals at a given point), {settings.WarmUp.TotalMilliseconds:0} ms warm-up then {settings.Measure.TotalMilliseconds:0} ms measured. Latency runs from the *scheduled* arrival to the caller's continuation, recorded in HdrHistogram (3 significant digits).")
            .AppendLine("- Simulated device: a batch of n takes a + b·n, completed by a spinning driver thread to within about a microsecond; like a GPU, no host thread is busy while it runs. One batch at a time (MaxConcurrentBatches 1).")
            .AppendLine(inv, $"- Processor: MaxBatchSize {CurveSweep.MaxBatchSize}, MaxDelay 1 ms, QueueCapacity {CurveSweep.QueueCapacity}, QueueFullMode.Reject (overload shows as rejections instead of blocking the open loop). Policies: `size` = FlushPolicy.Size(32, 64), `deadline` = FlushPolicy.Deadline, `adaptive` = FlushPolicy.Adaptive() with defaults, `none` = the same processor with **MaxBatchSize 1** (no batching, same queue).")
            .AppendLine("- Load % is of the device's capacity with full batches: MaxBatchSize / (a + b·MaxBatchSize). Achieved = completions inside the measured window per second. Ideal p99 = an ideal zero-overhead greedy batcher (or FIFO server for `none`) simulated on the same arrivals. Gen lag = how late the driver issued arrivals (its own health; latencies include it). Unfinished = requests still queued 2 s after the last arrival (only overloaded runs); they enter the percentiles with their latency so far, so those percentiles are lower bounds. Alloc MB/s and Gen0 GCs cover the whole process during the point (processor and load generator).")
            .AppendTargets(checks);

        foreach (DeviceProfile profile in settings.Profiles)
        {
            string png = $"curves-{profile.Name.ToLowerInvariant()}{(settings.Quick ? "-quick" : "")}.png";
            Plot(profile, points.Where(p => p.Profile == profile.Name).ToList(), Path.Combine(directory, png));
            md.AppendLine(inv, $"## Profile {profile.Name}: a = {profile.FixedMicroseconds} µs, b = {profile.PerItemMicroseconds} µs (capacity {profile.CapacityPerSecond:N0} requests/s; unbatched service time {profile.ServiceMicroseconds(1)} µs, unbatched capacity {1e6 / profile.ServiceMicroseconds(1):N0}/s)")
                .AppendLine()
                .AppendLine(inv, $"![Latency percentiles against offered load, profile {profile.Name}]({png})")
                .AppendLine();
            Table(md, points.Where(p => p.Profile == profile.Name));
            md.AppendLine().AppendLine(inv, $"Low-load probe (10% of the unbatched capacity):").AppendLine();
            Table(md, probes.Where(p => p.Profile == profile.Name));
            md.AppendLine();
        }

        File.WriteAllText(Path.Combine(directory, settings.Quick ? "curves-quick.md" : "curves.md"), md.ToString());

        var csv = new StringBuilder("profile,policy,load_percent,offered_per_s,achieved_per_s,p50_us,p99_us,p999_us,ideal_p99_us,mean_batch,device_busy_percent,rejected,failed,unfinished,measured,gen_lag_p99_us,alloc_mb_per_s,gen0,probe\n");
        foreach (var (p, probe) in points.Select(p => (p, false)).Concat(probes.Select(p => (p, true))))
        {
            csv.AppendLine(string.Join(',', new object[] { p.Profile, p.Policy, p.LoadPercent, p.OfferedPerSecond, p.AchievedPerSecond, p.P50Us, p.P99Us, p.P999Us, p.IdealP99Us, p.MeanBatch, p.DeviceBusyPercent, p.Rejected, p.Failed, p.Unfinished, p.Measured, p.IssueLagP99Us, p.AllocatedMBPerSecond, p.Gen0Collections, probe }
                .Select(v => Convert.ToString(v, inv))));
        }

        File.WriteAllText(Path.Combine(directory, settings.Quick ? "curves-quick.csv" : "curves.csv"), csv.ToString());
    }

    private static void Table(StringBuilder md, IEnumerable<CurvePoint> rows)
    {
        var inv = CultureInfo.InvariantCulture;
        md.AppendLine("| Policy | Load | Offered/s | Achieved/s | p50 µs | p99 µs | p99.9 µs | Ideal p99 µs | Mean batch | Device busy | Rejected | Unfinished | Gen lag p99 µs | Alloc MB/s | Gen0 GCs |")
          .AppendLine("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        foreach (CurvePoint p in rows.OrderBy(p => p.LoadPercent).ThenBy(p => p.Policy, StringComparer.Ordinal))
        {
            md.AppendLine(inv, $"| {p.Policy} | {p.LoadPercent:0.#}% | {p.OfferedPerSecond:N0} | {p.AchievedPerSecond:N0} | {p.P50Us:N0} | {p.P99Us:N0} | {p.P999Us:N0} | {(double.IsNaN(p.IdealP99Us) ? "–" : p.IdealP99Us.ToString("N0", inv))} | {p.MeanBatch:0.0} | {p.DeviceBusyPercent:0}% | {p.Rejected:N0}{(p.Failed > 0 ? $" (+{p.Failed} failed)" : "")} | {p.Unfinished:N0} | {p.IssueLagP99Us:N0} | {p.AllocatedMBPerSecond:N0} | {p.Gen0Collections} |");
        }
    }

    /// <summary>Latency percentiles (log scale) against offered load: colour = policy, line style = percentile.</summary>
    private static void Plot(DeviceProfile profile, List<CurvePoint> points, string path)
    {
        var plot = new Plot();
        Color[] colors = [Colors.Gray, Colors.DarkOrange, Colors.Crimson, Colors.RoyalBlue];
        string[] policies = ["none", "size", "deadline", "adaptive"];
        (string Name, Func<CurvePoint, double> Value, LinePattern Pattern)[] percentiles =
        [
            ("p50", p => p.P50Us, LinePattern.Solid),
            ("p99", p => p.P99Us, LinePattern.Dashed),
            ("p99.9", p => p.P999Us, LinePattern.Dotted),
        ];
        for (int i = 0; i < policies.Length; i++)
        {
            var rows = points.Where(p => p.Policy == policies[i] && !double.IsNaN(p.P50Us)).OrderBy(p => p.LoadPercent).ToList();
            foreach (var (name, value, pattern) in percentiles)
            {
                var line = plot.Add.Scatter(rows.Select(p => p.LoadPercent).ToArray(), rows.Select(p => Math.Log10(value(p) / 1000.0)).ToArray());
                line.Color = colors[i];
                line.LinePattern = pattern;
                line.LineWidth = 2;
                line.MarkerSize = 5;
                line.LegendText = $"{policies[i]} {name}";
            }
        }

        UseLogAxis(plot);
        plot.Title(string.Create(CultureInfo.InvariantCulture, $"Profile {profile.Name}: batch of n takes {profile.FixedMicroseconds} + {profile.PerItemMicroseconds}·n µs; MaxBatchSize 100, MaxDelay 1 ms"));
        plot.XLabel("Offered load (% of capacity with full batches), Poisson arrivals");
        plot.YLabel("Latency, ms (log scale)");
        plot.ShowLegend(Edge.Right);
        plot.SavePng(path, 1200, 700);
    }

    /// <summary>Labels the left axis as a log scale: the plotted values are log10 of the data, the ticks show the data.</summary>
    internal static void UseLogAxis(Plot plot)
    {
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = y => Math.Pow(10, y).ToString("0.###", CultureInfo.InvariantCulture),
        };
        plot.Grid.MajorLineColor = Colors.Black.WithOpacity(0.15);
        plot.Grid.MinorLineColor = Colors.Black.WithOpacity(0.05);
    }
}
