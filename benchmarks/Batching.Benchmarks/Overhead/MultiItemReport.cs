using System.Globalization;
using System.Text;
using BenchmarkDotNet.Exporters;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Reports;

namespace Batching.Benchmarks.Overhead;

/// <summary>One target's cost per item at one C: time, managed bytes allocated (all threads), mean batch size.</summary>
internal readonly record struct PerItem(double Nanoseconds, double Bytes, double MeanBatch);

/// <summary>
/// The multi-item targets of issue 10, from either the BenchmarkDotNet suite (<see cref="MultiItemBenchmarks"/>, page
/// multi-item.md) or the stopwatch mode (<c>multi-item</c>, page multi-item-stopwatch.md): a ProcessManyAsync call of 32
/// items costs at most a tenth of 32 single ProcessAsync calls in engine overhead per item (time above the direct
/// handler call at the same C), and allocates nothing per item.
/// </summary>
internal static class MultiItemReport
{
    public const double OverheadTarget = 0.1;

    public const string Setup =
        "C callers each make calls of 32 items in a loop; no-op handler `outputs[i] = inputs[i] * 2 + 1`; MaxBatchSize 100, " +
        "default options otherwise (Adaptive). `Single32` = 32 concurrent `ProcessAsync` calls, then await them all; `Many32` = one " +
        "`ProcessManyAsync` call of 32 items (split across batches where it straddles one); `Direct32` = the handler called " +
        "directly with the 32 items, the floor. Every item's output is checked. Times and bytes are **per item**; engine " +
        "overhead per item = the target's time minus Direct32's at the same C. Bytes are managed bytes allocated on every thread.";

    private static readonly string[] Methods = [nameof(MultiItemBenchmarks.Single32), nameof(MultiItemBenchmarks.Many32), nameof(MultiItemBenchmarks.Direct32)];

    public static string Check(IReadOnlyDictionary<(string Method, int Callers), PerItem> measured)
    {
        var text = new StringBuilder();
        foreach (int callers in measured.Keys.Select(k => k.Callers).Distinct().Order())
        {
            if (!measured.TryGetValue(("Single32", callers), out PerItem single) || !measured.TryGetValue(("Many32", callers), out PerItem many)
                || !measured.TryGetValue(("Direct32", callers), out PerItem direct))
            {
                continue;
            }

            double singleOverhead = single.Nanoseconds - direct.Nanoseconds, manyOverhead = many.Nanoseconds - direct.Nanoseconds;
            double ratio = manyOverhead / singleOverhead;

            // A library target measured faster than the direct call is noise (a disturbed or too short run): no verdict.
            bool measurable = singleOverhead > 0 && manyOverhead >= 0;
            text.AppendLine(ResultsPage.Line(measurable && ratio <= OverheadTarget, string.Create(CultureInfo.InvariantCulture,
                $"C={callers}: ProcessManyAsync(32) engine overhead {manyOverhead:0.0} ns per item = {ratio:0.000}x that of 32 single ProcessAsync calls ({singleOverhead:0.0} ns per item); target <= {OverheadTarget}x [per item: Many32 {many.Nanoseconds:0.0} ns, Single32 {single.Nanoseconds:0.0} ns, Direct32 {direct.Nanoseconds:0.0} ns]{(measurable ? "" : " (not measurable: a library target ran faster than the direct call; rerun longer on a quiet machine)")}")));
        }

        foreach (int callers in measured.Keys.Select(k => k.Callers).Distinct().Order())
        {
            foreach (string method in new[] { "Many32", "Single32" })
            {
                if (measured.TryGetValue((method, callers), out PerItem m))
                {
                    text.AppendLine(ResultsPage.Line(m.Bytes < 0.5, string.Create(CultureInfo.InvariantCulture,
                        $"C={callers} {method}: {m.Bytes:0.00} B allocated per item ({m.Bytes * MultiItemBenchmarks.ItemsPerCall:0.0} B per call of 32; target 0 B)")));
                }
            }
        }

        return text.ToString();
    }

    /// <summary>The per-item table both pages share.</summary>
    public static void Table(StringBuilder page, IReadOnlyDictionary<(string Method, int Callers), PerItem> measured)
    {
        page.AppendLine("| C | Method | Time per item | Engine overhead per item | Items/s | Allocated per item | Allocated per call | Mean batch |")
            .AppendLine("|--:|---|--:|--:|--:|--:|--:|--:|");
        foreach (var ((method, callers), m) in measured.OrderBy(kv => kv.Key.Callers).ThenBy(kv => Array.IndexOf(Methods, kv.Key.Method)))
        {
            string overhead = measured.TryGetValue(("Direct32", callers), out PerItem direct) && method != "Direct32"
                ? $"{m.Nanoseconds - direct.Nanoseconds:0.0} ns" : "–";
            page.AppendLine(CultureInfo.InvariantCulture,
                $"| {callers} | {method} | {m.Nanoseconds:0.0} ns | {overhead} | {1e9 / m.Nanoseconds:N0} | {m.Bytes:0.00} B | {m.Bytes * MultiItemBenchmarks.ItemsPerCall:0.0} B | {(double.IsNaN(m.MeanBatch) ? "–" : m.MeanBatch.ToString("0.0", CultureInfo.InvariantCulture))} |");
        }
    }

    /// <summary>The page of the BenchmarkDotNet run of <see cref="MultiItemBenchmarks"/>.</summary>
    public static string Write(Summary summary, string directory, string command, bool quick)
    {
        var measured = new Dictionary<(string Method, int Callers), PerItem>();
        foreach (BenchmarkReport report in summary.Reports)
        {
            if (report.ResultStatistics is null)
            {
                continue;
            }

            // Exact bytes per item (BenchmarkDotNet's Allocated column rounds to whole bytes per operation).
            // Null where the memory diagnoser could not measure.
            double bytes = report.GcStats.TotalOperations == 0 || report.GcStats.GetTotalAllocatedBytes(true) is not { } total
                ? double.NaN : total / (double)report.GcStats.TotalOperations;
            measured[(report.BenchmarkCase.Descriptor.WorkloadMethod.Name, (int)report.BenchmarkCase.Parameters["Callers"])] =
                new PerItem(report.ResultStatistics.Mean, bytes, double.NaN);
        }

        string checks = Check(measured);
        Console.WriteLine();
        Console.WriteLine("Multi-item targets (issue 10; timing targets are reported, never asserted):");
        Console.Write(checks);

        var logger = new AccumulationLogger();
        MarkdownExporter.GitHub.ExportToLog(summary, logger);
        StringBuilder page = ResultsPage.Start("Multi-item calls: cost per item of ProcessManyAsync against single calls (BenchmarkDotNet)", command, quick)
            .AppendLine()
            .AppendLine(Setup)
            .AppendLine("BenchmarkDotNet's Mean is per item (OperationsPerInvoke = 2,048 items per invocation); Ratio is against Single32 at the same C.")
            .AppendTargets(checks)
            .AppendLine("## Per item")
            .AppendLine();
        Table(page, measured);
        page.AppendLine()
            .AppendLine("## BenchmarkDotNet table")
            .AppendLine()
            .Append(logger.GetLog());
        return ResultsPage.Write(page, directory, "multi-item", quick);
    }
}
