using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Batching.Benchmarks.Overhead;

/// <summary>
/// The benchmark a user would run first (issue "Core v2"): C callers in a closed loop, each started with
/// <c>Task.Run</c> and awaiting <c>ProcessAsync</c> in a loop, over a no-op handler, MaxBatchSize 100, against the
/// hand-written Channel + TaskCompletionSource(RunContinuationsAsynchronously) batcher, in one process. Rounds
/// alternate the targets (the start rotates every round); each round's throughput is divided by the same round's
/// baseline, and the page reports the median of those ratios, with managed bytes allocated per request.
/// </summary>
/// <remarks>A console harness beside the BenchmarkDotNet suite: BenchmarkDotNet's invocation loop keeps callers alive
/// across invocations, this one starts them fresh per run as a user's test would. Reports, never assertions.</remarks>
internal static class ClosedLoopHarness
{
    private const double Target = 1.5;

    /// <summary>The Default ratio of the last full run before issue 10 (results/closed-loop.md, commit f82430c).</summary>
    private const double PreviousDefaultRatio = 1.33;

    private sealed record Candidate(string Name, string What, Func<RequestTarget> Create);

    private static readonly Candidate[] Candidates =
    [
        new("Channel", "Channel<(int, TaskCompletionSource<int>)> + one consumer loop, RunContinuationsAsynchronously (baseline)", () => new ChannelTarget()),
        new("Default", "this library, default options (Adaptive, PriorityLevels 1) but MaxBatchSize 100", () => new LibraryTarget(null)),
        new("Default2Levels", "the same with PriorityLevels 2 (weights 2:1): half the callers at each level, through ProcessAsync(input, RequestOptions)", () => new LibraryTarget(null, priorityLevels: 2)),
        new("Adaptive", "FlushPolicy.Adaptive()", () => new LibraryTarget(FlushPolicy.Adaptive())),
        new("Deadline", "FlushPolicy.Deadline", () => new LibraryTarget(FlushPolicy.Deadline)),
        new("Size", "FlushPolicy.Size()", () => new LibraryTarget(FlushPolicy.Size())),
    ];

    public static int Run(string[] args, string command)
    {
        int rounds = IntOption(args, "--rounds", 3);
        int callers = IntOption(args, "--callers", 256);
        double seconds = double.Parse(Program.OptionValue(args, "--seconds") ?? "3", CultureInfo.InvariantCulture);
        string output = Program.OptionValue(args, "--out") ?? Paths.Results;
        bool quick = args.Contains("--quick");
        Candidate[] candidates = [.. Candidates.Where(c => Program.OptionValue(args, "--only") is not { } only || c.Name == "Channel" || only.Split(',').Contains(c.Name))];

        var throughput = candidates.ToDictionary(c => c.Name, _ => new List<double>());
        var ratios = candidates.ToDictionary(c => c.Name, _ => new List<double>());
        var bytes = candidates.ToDictionary(c => c.Name, _ => new List<double>());
        var batches = candidates.ToDictionary(c => c.Name, _ => new List<double>());
        for (int round = 0; round < rounds; round++)
        {
            var measured = new Dictionary<string, double>();
            for (int k = 0; k < candidates.Length; k++)
            {
                Candidate candidate = candidates[(k + round) % candidates.Length];
                (double rate, double allocated, double batch) = Measure(candidate.Create, callers, TimeSpan.FromSeconds(seconds));
                measured[candidate.Name] = rate;
                throughput[candidate.Name].Add(rate);
                bytes[candidate.Name].Add(allocated);
                batches[candidate.Name].Add(batch);
                Console.WriteLine($"round {round + 1}/{rounds} {candidate.Name,-9} {rate,12:N0} requests/s {allocated,8:0.00} B/request mean batch {batch:0.0}, {ThreadPool.ThreadCount} pool threads");
            }

            foreach (Candidate candidate in candidates)
            {
                ratios[candidate.Name].Add(measured[candidate.Name] / measured["Channel"]);
            }
        }

        var page = new StringBuilder();
        page.AppendLine(CultureInfo.InvariantCulture, $"# Closed-loop throughput: {callers} callers, no-op handler, MaxBatchSize 100{(quick ? " (quick smoke run: numbers mean nothing)" : "")}");
        page.AppendLine();
        page.AppendLine(CultureInfo.InvariantCulture, $"- Machine: {Environment.ProcessorCount} logical cores, {Environment.OSVersion}, .NET {Environment.Version}; 1-minute load average at start {Machine.LoadAverageAtStart}, at end {Machine.LoadAverage()}");
        page.AppendLine(CultureInfo.InvariantCulture, $"- Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; commit measured: {Git.Describe()}");
        page.AppendLine(CultureInfo.InvariantCulture, $"- Command: `{command}`");
        page.AppendLine(CultureInfo.InvariantCulture, $"- {rounds} rounds; each round runs every target once for {seconds:0.#} s after a {seconds / 4:0.##} s warm-up, the starting target rotating per round. Ratio = the target's throughput over the Channel baseline's in the same round; the table gives the median ratio, and the range over the rounds.");
        page.AppendLine();
        page.AppendLine("| Target | What | Median throughput | Ratio vs Channel (median) | Ratio range | Allocated per request | Mean batch |");
        page.AppendLine("|---|---|--:|--:|--:|--:|--:|");
        foreach (Candidate candidate in candidates)
        {
            page.AppendLine(CultureInfo.InvariantCulture,
                $"| {candidate.Name} | {candidate.What} | {Median(throughput[candidate.Name]):N0}/s | {Median(ratios[candidate.Name]):0.00}x | {ratios[candidate.Name].Min():0.00}x – {ratios[candidate.Name].Max():0.00}x | {Median(bytes[candidate.Name]):0.0} B | {Median(batches[candidate.Name]):0.0} |");
        }

        page.AppendLine();
        if (ratios.TryGetValue("Default", out List<double>? defaultRatios)) // absent with --only and no Default
        {
            double defaultRatio = Median(defaultRatios);
            page.AppendLine(CultureInfo.InvariantCulture, $"- {(defaultRatio >= Target ? "PASS" : "FAIL")}: default options reach {defaultRatio:0.00}x the baseline (target >= {Target}x)");

            // Issue 10: single-item calls must not pay for the new multi-item and priority machinery at PriorityLevels 1.
            page.AppendLine(CultureInfo.InvariantCulture,
                $"- {(defaultRatio >= PreviousDefaultRatio ? "PASS" : "FAIL")}: no single-item regression (issue 10): default options, PriorityLevels 1, reach {defaultRatio:0.00}x the baseline, {Median(throughput["Default"]):N0} requests/s (the engine before issue 10, f82430c: {PreviousDefaultRatio:0.00}x in its final 5-round run, 6,363,375 requests/s; 1.51x median over ten processes; target >= {PreviousDefaultRatio:0.00}x)");
        }

        if (ratios.ContainsKey("Default") && ratios.TryGetValue("Default2Levels", out List<double>? twoLevels))
        {
            List<double> relative = [.. twoLevels.Zip(ratios["Default"], (two, one) => two / one)];
            page.AppendLine(CultureInfo.InvariantCulture,
                $"- INFO: PriorityLevels 2 reaches {Median(relative):0.00}x the throughput of PriorityLevels 1 in the same rounds (range {relative.Min():0.00}x – {relative.Max():0.00}x): the cost of a second lane");
        }

        foreach (Candidate candidate in candidates.Where(c => c.Name is not "Channel" and not "Default"))
        {
            double ratio = Median(ratios[candidate.Name]);
            page.AppendLine(CultureInfo.InvariantCulture, $"- {(ratio >= 1.0 ? "PASS" : "FAIL")}: {candidate.Name} reaches {ratio:0.00}x (target >= 1.0x)");
        }

        foreach (Candidate candidate in candidates.Where(c => c.Name != "Channel"))
        {
            double allocated = Median(bytes[candidate.Name]);
            page.AppendLine(CultureInfo.InvariantCulture, $"- {(allocated < 0.5 ? "PASS" : "FAIL")}: {candidate.Name} allocates {allocated:0.00} B per request (target 0 B)");
        }

        Directory.CreateDirectory(output);
        string path = Path.Combine(output, quick ? "closed-loop-quick.md" : "closed-loop.md");
        File.WriteAllText(path, page.ToString());
        Console.WriteLine(page.ToString());
        Console.WriteLine($"Wrote {path}");
        return 0;
    }

    /// <summary>One run of a target: requests (items) per second, bytes allocated per request on every thread, mean batch.</summary>
    internal static (double Rate, double Bytes, double Batch) Measure(Func<RequestTarget> create, int callers, TimeSpan duration)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var loop = new ClosedLoopCallers(create(), callers);
        Thread.Sleep(duration / 4); // warm-up: tiering, pools and queues reach steady state
        long requests0 = loop.Completed, bytes0 = GC.GetTotalAllocatedBytes(precise: true);
        long batches0 = Volatile.Read(ref NoOpHandler.Batches), items0 = Volatile.Read(ref NoOpHandler.Items);
        var watch = Stopwatch.StartNew();
        Thread.Sleep(duration);
        long requests = loop.Completed - requests0;
        double elapsed = watch.Elapsed.TotalSeconds;
        double allocated = GC.GetTotalAllocatedBytes(precise: true) - bytes0;
        long batches = Volatile.Read(ref NoOpHandler.Batches) - batches0, items = Volatile.Read(ref NoOpHandler.Items) - items0;
        loop.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return (requests / elapsed, allocated / Math.Max(1, requests), batches == 0 ? 0 : (double)items / batches);
    }

    internal static double Median(List<double> values)
    {
        double[] sorted = [.. values.Order()];
        return sorted.Length == 0 ? double.NaN : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    internal static int IntOption(string[] args, string name, int fallback) =>
        Program.OptionValue(args, name) is { } value ? int.Parse(value, CultureInfo.InvariantCulture) : fallback;
}
