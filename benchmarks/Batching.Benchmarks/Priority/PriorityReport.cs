using System.Globalization;
using System.Text;
using Batching.Benchmarks.Curves;
using ScottPlot;

namespace Batching.Benchmarks.Priority;

/// <summary>Checks the priority targets of issue 10 and writes priority.md and priority.png from the same points.</summary>
internal static class PriorityReport
{
    private const double WaitGrowthBound = 2;

    public static string Check(PrioritySettings settings, List<PriorityPoint> points)
    {
        var inv = CultureInfo.InvariantCulture;
        var text = new StringBuilder();
        PriorityPoint? low = Find(points, "priority", 60), high = Find(points, "priority", 120), fifoHigh = Find(points, "fifo", 120);
        if (low is not null && high is not null)
        {
            LevelWait before = low.Level(0), after = high.Level(0);
            double bound = WaitGrowthBound * before.P99Us;
            text.AppendLine(ResultsPage.Line(after.P99Us <= bound, string.Create(inv,
                $"120% load: level 0 p99 queue wait {Ms(after.P99Us)} ms <= {WaitGrowthBound} x its p99 at 60% load ({Ms(before.P99Us)} ms, bound {Ms(bound)} ms)? ({after.P99Us / before.P99Us:0.00}x){LowerBound(after)}")));
        }

        if (high is not null)
        {
            text.AppendLine(ResultsPage.Line(high.BothHadWorkShare1 >= settings.ConfiguredShare1, string.Create(inv,
                $"120% load: level 1 received {high.BothHadWorkShare1:P1} of the items dispatched while both levels had work ({high.BothHadWorkBatchPercent:0}% of the batches) >= its configured share {settings.ConfiguredShare1:P1} (weights {settings.WeightsText})? " +
                $"[in batches after which both levels still had items queued ({high.ContendedBatchPercent:0}% of the batches), where only the fair share decides: {high.ContendedShare1:P1}; over all batches: {high.Level(1).Share:P1}]")));
        }

        if (high is not null && fifoHigh is not null)
        {
            LevelWait fifo = fifoHigh.Level(-1), urgent = high.Level(0);
            text.AppendLine(string.Create(inv,
                $"INFO 120% load, what priority buys: level 0 p99 queue wait {Ms(urgent.P99Us)} ms against {Ms(fifo.P99Us)} ms for every item with strict FIFO (one level, same arrivals; {fifo.P99Us / urgent.P99Us:0}x){LowerBound(fifo)}; level 1 p99 {Ms(high.Level(1).P99Us)} ms{LowerBound(high.Level(1))}"));
        }

        foreach (PriorityPoint p in points.Where(p => p.Failed > 0))
        {
            text.AppendLine(string.Create(inv, $"WARNING {p.Config} {p.LoadPercent:0}% load: {p.Failed} calls failed or returned a wrong output"));
        }

        return text.ToString();
    }

    public static void Write(PrioritySettings settings, List<PriorityPoint> points, string checks, string directory, string command, TimeSpan took)
    {
        var inv = CultureInfo.InvariantCulture;
        DeviceProfile device = settings.Device;
        string png = settings.Quick ? "priority-quick.png" : "priority.png";
        Directory.CreateDirectory(directory);
        Plot(points, device, settings.WeightsText, Path.Combine(directory, png));
        StringBuilder md = ResultsPage.Start("Priority under overload: queue wait and share per priority level", command, settings.Quick, took)
            .AppendLine()
            .AppendLine("Setup:")
            .AppendLine(inv, $"- Open-loop Poisson arrivals (seeded, seed {PrioritySweep.Seed} + load index: both configurations see the same arrivals at a load), each arrival at priority 0 or 1 with probability 1/2 (seeded): 50/50 offered load. {settings.WarmUp.TotalSeconds:0.#} s warm-up, then {settings.Measure.TotalSeconds:0.#} s measured; a point's waits are those of the arrivals in the measured window.")
            .AppendLine(inv, $"- Simulated device: a batch of n takes a + b·n with a = {device.FixedMicroseconds} µs, b = {device.PerItemMicroseconds} µs (a full batch of {PrioritySweep.MaxBatchSize}: {device.ServiceMicroseconds(PrioritySweep.MaxBatchSize) / 1000:0.#} ms), completed by the load generator's spinning thread; capacity {device.CapacityPerSecond:N0} items/s with full batches. Load % is of that capacity.")
            .AppendLine(inv, $"- Processor: default flush policy (Adaptive), MaxBatchSize {PrioritySweep.MaxBatchSize}, QueueCapacity {settings.QueueCapacity:N0}{(settings.QueueCapacity == PrioritySweep.DefaultQueueCapacity ? " (ten full batches)" : "")}, **QueueFullMode.Wait** (overload shows as callers waiting for space; nothing is rejected), MaxConcurrentBatches 1. `priority` = PriorityLevels 2 with weights {settings.WeightsText} (level 1's share while both levels have work: {settings.ConfiguredShare1:P1}); `fifo` = PriorityLevels 1, the same arrivals in one FIFO (its level rows are the same arrivals' classes, for comparison).")
            .AppendLine("- **Queue wait** = from the *scheduled* arrival to the start of the item's batch, timed in the handler (it includes waiting for queue space). Recorded in HdrHistogram. Items still undispatched when the drain limit ran out enter with their wait so far (a lower bound, flagged).")
            .AppendLine("- **Share** = the level's part of the items dispatched in the measured window. *While both had work* counts only batches formed while both levels had queued items (the batch's items plus what `GetLoad()` shows still queued at the batch's start); *contended* only batches after which both levels still had items queued, where the composition is the fair share's alone. Gen lag = how late the load generator issued arrivals (its own health; waits include it); GCs and GC pauses cover the whole process during the point.")
            .AppendLine("- Under overload the backlog of whatever is not served grows for the whole run (level 1 with priorities, everything with FIFO), so those waits grow with the run's length; level 0's should not.")
            .AppendTargets(checks)
            .AppendLine(inv, $"![Queue wait per priority level against offered load]({png})")
            .AppendLine()
            .AppendLine("## Queue wait per level")
            .AppendLine()
            .AppendLine("| Config | Load | Level | Offered/s | Dispatched/s | Share of dispatched | Wait p50 ms | p99 ms | p99.9 ms | Undispatched |")
            .AppendLine("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|");
        foreach (PriorityPoint p in points.OrderBy(p => p.Config, StringComparer.Ordinal).ThenBy(p => p.LoadPercent))
        {
            foreach (LevelWait w in p.Levels)
            {
                md.AppendLine(inv, $"| {p.Config} | {p.LoadPercent:0}% | {(w.Level < 0 ? "all" : w.Level.ToString(inv))} | {w.OfferedPerSecond:N0} | {w.DispatchedPerSecond:N0} | {w.Share:P1} | {Ms(w.P50Us)} | {Ms(w.P99Us)} | {Ms(w.P999Us)} | {w.Undispatched:N0} |");
            }
        }

        md.AppendLine()
            .AppendLine("## Fair share and device")
            .AppendLine()
            .AppendLine("| Config | Load | Level 1 share while both had work | Batches with both at work | Level 1 share, contended | Contended batches | Mean batch | Device busy | Gen lag p99 µs | GCs gen0 / 1 / 2 | GC pauses | Failed |")
            .AppendLine("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        foreach (PriorityPoint p in points.OrderBy(p => p.Config, StringComparer.Ordinal).ThenBy(p => p.LoadPercent))
        {
            md.AppendLine(inv, $"| {p.Config} | {p.LoadPercent:0}% | {Percent(p.BothHadWorkShare1)} | {Percent(p.BothHadWorkBatchPercent / 100)} | {Percent(p.ContendedShare1)} | {Percent(p.ContendedBatchPercent / 100)} | {p.MeanBatch:0.0} | {p.DeviceBusyPercent:0}% | {p.IssueLagP99Us:N0} | {p.Collections} | {p.GcPauseMs:N0} ms | {p.Failed} |");
        }

        ResultsPage.Write(md, directory, "priority", settings.Quick);
        Console.WriteLine($"Priority sweep took {took.TotalSeconds:0} s; results in {directory}");
    }

    /// <summary>Queue wait (log scale) against offered load: blue = level 0, orange = level 1, grey = strict FIFO; solid = p99, dashed = p50.</summary>
    private static void Plot(List<PriorityPoint> points, DeviceProfile device, string weights, string path)
    {
        var plot = new Plot();
        (string Config, int Level, string Name, Color Color)[] series =
        [
            ("priority", 0, "priority level 0", Colors.RoyalBlue),
            ("priority", 1, "priority level 1", Colors.DarkOrange),
            ("fifo", -1, "strict FIFO (one level)", Colors.Gray),
        ];
        foreach (var (config, level, name, color) in series)
        {
            var rows = points.Where(p => p.Config == config).OrderBy(p => p.LoadPercent).Select(p => (p.LoadPercent, Wait: p.Level(level))).ToList();
            foreach (var (percentile, value, pattern) in new (string, Func<LevelWait, double>, LinePattern)[] { ("p99", w => w.P99Us, LinePattern.Solid), ("p50", w => w.P50Us, LinePattern.Dashed) })
            {
                var line = plot.Add.Scatter(rows.Select(r => r.LoadPercent).ToArray(), rows.Select(r => Math.Log10(value(r.Wait) / 1000.0)).ToArray());
                line.Color = color;
                line.LinePattern = pattern;
                line.LineWidth = 2;
                line.MarkerSize = 6;
                line.LegendText = $"{name} {percentile}";
            }
        }

        if (Find(points, "priority", 60) is { } low)
        {
            var bound = plot.Add.HorizontalLine(Math.Log10(WaitGrowthBound * low.Level(0).P99Us / 1000.0));
            bound.Color = Colors.RoyalBlue.WithOpacity(0.5);
            bound.LinePattern = LinePattern.Dotted;
            bound.LegendText = "target: level 0 p99 at 120% <= 2 x at 60%";
        }

        CurveReport.UseLogAxis(plot);
        plot.Title(string.Create(CultureInfo.InvariantCulture,
            $"Two levels, weights {weights}, 50/50 load; batch of n: {device.FixedMicroseconds} + {device.PerItemMicroseconds}·n µs"));
        plot.XLabel("Offered load (% of capacity with full batches), Poisson arrivals");
        plot.YLabel("Queue wait (arrival to batch start), ms (log scale)");
        plot.ShowLegend(Edge.Right);
        plot.SavePng(path, 1200, 700);
    }

    private static PriorityPoint? Find(List<PriorityPoint> points, string config, double load) =>
        points.FirstOrDefault(p => p.Config == config && Math.Abs(p.LoadPercent - load) < 1e-9);

    private static string Ms(double microseconds) => (microseconds / 1000).ToString(microseconds < 10_000 ? "0.00" : "N0", CultureInfo.InvariantCulture);

    private static string Percent(double fraction) => double.IsNaN(fraction) ? "–" : fraction.ToString("P1", CultureInfo.InvariantCulture);

    private static string LowerBound(LevelWait wait) =>
        wait.Undispatched > 0 ? string.Create(CultureInfo.InvariantCulture, $" (lower bound: {wait.Undispatched:N0} of its items were still undispatched at the drain limit)") : "";
}
