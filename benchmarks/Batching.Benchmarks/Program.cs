using System.Globalization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Batching.Benchmarks.Curves;
using Batching.Benchmarks.Overhead;
using Batching.Benchmarks.Priority;

namespace Batching.Benchmarks;

/// <summary>
/// Modes:
///   (BenchmarkDotNet arguments)  the overhead suite, e.g. --filter '*'; writes benchmarks/results/overhead.md
///   curves [--quick] [--out DIR] [--loads 25,50] [--profiles B]
///                                open-loop load curves for every flush policy; writes curves.md and PNG plots
///   probe METHOD C [S] [--alloc-types]  one overhead scenario on a stopwatch for S seconds, with allocations per request
///                                (METHOD also Single32, Many32, Direct32: the multi-item targets, per item)
///   harness [--rounds N] [--seconds S] [--callers C] [--only A,B] [--out DIR]
///                                the closed-loop harness of issue "Core v2" (C = 256 callers vs the Channel baseline,
///                                alternating rounds, median ratio); writes closed-loop.md
///   multi-item [--rounds N] [--seconds S] [--callers 1,8] [--out DIR]
///                                issue 10's multi-item targets on a stopwatch; writes multi-item-stopwatch.md
///                                (the BenchmarkDotNet version, --filter '*MultiItem*', writes multi-item.md)
///   priority [--quick] [--loads 30,60,90,120] [--seconds S] [--warmup S] [--out DIR]
///                                issue 10's priority-under-overload targets, open loop; writes priority.md and priority.png
///   generation [--quick] [--out DIR]
///                                issue 11's continuous batching against static batching and one at a time, on a simulated
///                                decoder step; writes generation.md and generation.png
///   quick                        a few-second smoke run of all of them, into a temp folder (CI: compiles and executes, never gates on timing)
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        // The default only: setting CurrentCulture here would put a culture AsyncLocal, with its change notifications, into
        // every caller's ExecutionContext and charge every continuation of every target for it.
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        Machine.LoadAverageAtStart = Machine.LoadAverage();
        string command = "dotnet run -c Release --project benchmarks/Batching.Benchmarks -- " + string.Join(' ', args);
        if (args.Length > 0 && args[0] == "curves")
        {
            string output = OptionValue(args, "--out") ?? Paths.Results;
            Machine.RaisePriority();
            SweepSettings settings = args.Contains("--quick") ? CurveSweep.Quick : CurveSweep.Full;
            if (OptionValue(args, "--loads") is { } loads)
            {
                // For investigation: only these load points (percent), e.g. --loads 25,50,75.
                settings = settings with { LoadPercents = [.. loads.Split(',').Select(l => double.Parse(l, CultureInfo.InvariantCulture))] };
            }

            if (OptionValue(args, "--profiles") is { } profiles)
            {
                settings = settings with { Profiles = [.. settings.Profiles.Where(p => profiles.Split(',').Contains(p.Name))] };
            }

            return CurveSweep.Run(settings, output, command);
        }

        if (args.Length >= 3 && args[0] == "probe")
        {
            // probe METHOD CALLERS [SECONDS] [--alloc-types]: one scenario on a stopwatch, for investigation.
            double seconds = args.Length > 3 && double.TryParse(args[3], CultureInfo.InvariantCulture, out double s) ? s : 5;
            return OverheadProbe.Run(args[1], int.Parse(args[2], CultureInfo.InvariantCulture), TimeSpan.FromSeconds(seconds), args.Contains("--alloc-types"));
        }

        if (args.Length > 0 && args[0] == "harness")
        {
            return ClosedLoopHarness.Run(args, command);
        }

        if (args.Length > 0 && args[0] == "multi-item")
        {
            return MultiItemStopwatch.Run(args, command);
        }

        if (args.Length > 0 && args[0] == "priority")
        {
            Machine.RaisePriority();
            return PrioritySweep.Run(args, command);
        }

        if (args.Length > 0 && args[0] == "generation")
        {
            Machine.RaisePriority();
            return Generation.GenerationSweep.Run(args, command);
        }

        if (args.Length > 0 && args[0] == "quick")
        {
            return Quick(command);
        }

        IConfig config = OverheadConfig.Full();
        IEnumerable<Summary> summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
        foreach (Summary summary in summaries)
        {
            if (summary.BenchmarksCases.Any(c => c.Descriptor.Type == typeof(OverheadBenchmarks)) && !summary.HasCriticalValidationErrors)
            {
                OverheadReport.Write(summary, Paths.Results, command, quick: false);
            }

            if (summary.BenchmarksCases.Any(c => c.Descriptor.Type == typeof(MultiItemBenchmarks)) && !summary.HasCriticalValidationErrors)
            {
                MultiItemReport.Write(summary, Paths.Results, command, quick: false);
            }
        }

        return 0;
    }

    private static int Quick(string command)
    {
        string output = Path.Combine(Path.GetTempPath(), "batching-bench-quick");
        Directory.CreateDirectory(output);
        Summary[] summaries = BenchmarkRunner.Run([typeof(OverheadBenchmarks), typeof(MultiItemBenchmarks)], OverheadConfig.Quick());
        if (summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success)))
        {
            Console.Error.WriteLine("quick: a benchmark case failed to run.");
            return 1;
        }

        OverheadReport.Write(summaries.Single(s => s.BenchmarksCases.Any(c => c.Descriptor.Type == typeof(OverheadBenchmarks))), output, command, quick: true);
        MultiItemReport.Write(summaries.Single(s => s.BenchmarksCases.Any(c => c.Descriptor.Type == typeof(MultiItemBenchmarks))), output, command, quick: true);
        ClosedLoopHarness.Run(["harness", "--rounds", "1", "--seconds", "0.5", "--quick", "--out", output], command);
        MultiItemStopwatch.Run(["multi-item", "--rounds", "1", "--seconds", "0.3", "--quick", "--out", output], command);
        PrioritySweep.Run(["priority", "--quick", "--out", output], command);
        Generation.GenerationSweep.Run(["generation", "--quick", "--out", output], command);
        return CurveSweep.Run(CurveSweep.Quick, output, command);
    }

    internal static string? OptionValue(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
