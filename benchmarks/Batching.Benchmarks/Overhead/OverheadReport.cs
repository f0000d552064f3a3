using System.Globalization;
using System.Text;
using BenchmarkDotNet.Exporters;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Reports;

namespace Batching.Benchmarks.Overhead;

/// <summary>Checks the overhead targets of issue 3 against a finished run and writes the committed results page.</summary>
internal static class OverheadReport
{
    private const double ThroughputTarget = 1.5;
    private const double AddedLatencyTargetNs = 2_000;

    public static string Write(Summary summary, string resultsDirectory, string command, bool quick)
    {
        var checks = new StringBuilder();
        var mean = new Dictionary<(string Method, int Callers), double>();
        var allocated = new Dictionary<(string Method, int Callers), long?>();
        foreach (BenchmarkReport report in summary.Reports)
        {
            if (report.ResultStatistics is null)
            {
                continue;
            }

            var key = (report.BenchmarkCase.Descriptor.WorkloadMethod.Name, (int)report.BenchmarkCase.Parameters["Callers"]);
            mean[key] = report.ResultStatistics.Mean; // ns per request: OperationsPerInvoke is applied
            allocated[key] = report.GcStats.GetBytesAllocatedPerOperation(report.BenchmarkCase);
        }

        string[] policies = [nameof(OverheadBenchmarks.Deadline), nameof(OverheadBenchmarks.Size), nameof(OverheadBenchmarks.Adaptive), nameof(OverheadBenchmarks.AdaptiveInline)];
        foreach (string policy in policies)
        {
            if (mean.TryGetValue(("Channel", 256), out double channel) && mean.TryGetValue((policy, 256), out double library))
            {
                double speedup = channel / library;
                checks.AppendLine(Line(speedup >= ThroughputTarget,
                    $"C=256 {policy}: {speedup:0.00}x the Channel baseline's throughput ({Rate(library)} vs {Rate(channel)} requests/s; target >= {ThroughputTarget}x)"));
            }
        }

        foreach (string policy in policies)
        {
            foreach (int callers in new[] { 1, 16, 256 })
            {
                if (allocated.TryGetValue((policy, callers), out long? bytes) && bytes is { } b)
                {
                    checks.AppendLine(Line(b == 0, $"C={callers} {policy}: {b} B allocated per request (target 0 B)"));
                }
            }
        }

        foreach (string adaptiveVariant in new[] { nameof(OverheadBenchmarks.Adaptive), nameof(OverheadBenchmarks.AdaptiveInline) })
        {
            if (mean.TryGetValue((adaptiveVariant, 1), out double adaptive) && mean.TryGetValue(("Direct", 1), out double direct))
            {
                double added = adaptive - direct;
                checks.AppendLine(Line(added < AddedLatencyTargetNs,
                    $"C=1 {adaptiveVariant}: {added / 1000:0.00} us added latency over the direct handler call ({adaptive / 1000:0.00} us vs {direct / 1000:0.000} us; target < 2 us)"));
            }
        }

        Console.WriteLine();
        Console.WriteLine("Overhead targets (issue 3; timing targets are reported, never asserted):");
        Console.Write(checks.ToString());

        var logger = new AccumulationLogger();
        MarkdownExporter.GitHub.ExportToLog(summary, logger);
        var page = new StringBuilder()
            .AppendLine("# Overhead suite: cost per request")
            .AppendLine()
            .AppendLine(CultureInfo.InvariantCulture, $"- Machine: 2-core dev VM (details in the BenchmarkDotNet header below)")
            .AppendLine(CultureInfo.InvariantCulture, $"- Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC")
            .AppendLine(CultureInfo.InvariantCulture, $"- Command: `{command}`")
            .AppendLine(CultureInfo.InvariantCulture, $"- Commit: {Git.Describe()}")
            .AppendLine(CultureInfo.InvariantCulture, $"- Load average (1/5/15 min) at start: {Machine.LoadAverageAtStart}; at end: {Machine.LoadAverage()} (other work on the VM moves the numbers)")
            .AppendLine()
            .AppendLine("C callers each await `ProcessAsync` in a loop; no-op handler `outputs[i] = inputs[i] * 2 + 1`; MaxBatchSize 100, MaxDelay 1 ms.")
            .AppendLine("Mean and Allocated are **per request**. Ratio = Mean / Channel's Mean at the same C (below 1 is faster; throughput multiple = 1 / Ratio).")
            .AppendLine("Alloc Ratio = Allocated / Channel's Allocated. Compare ratios, not absolute times, across machines.")
            .AppendTargets(checks.ToString())
            .AppendLine("## BenchmarkDotNet table")
            .AppendLine()
            .Append(logger.GetLog());

        string file = Path.Combine(resultsDirectory, quick ? "overhead-quick.md" : "overhead.md");
        Directory.CreateDirectory(resultsDirectory);
        File.WriteAllText(file, page.ToString());
        Console.WriteLine($"Wrote {file}");
        return file;
    }

    private static string Line(bool pass, string text) => $"{(pass ? "PASS" : "FAIL")} {text}";

    private static string Rate(double nanosecondsPerRequest) => (1e9 / nanosecondsPerRequest).ToString("N0", CultureInfo.InvariantCulture);
}
