using System.Globalization;
using System.Text;

namespace Batching.Benchmarks.Overhead;

/// <summary>
/// The multi-item targets of issue 10 on a stopwatch, without BenchmarkDotNet (a minute instead of several): rounds
/// that run Single32, Many32 and Direct32 at each C once each for S seconds after a quarter of that as warm-up, the
/// starting target rotating per round, in one process; the page gives medians over the rounds and the range of the
/// per-round overhead ratio. Reports, never assertions.
/// </summary>
internal static class MultiItemStopwatch
{
    private static readonly (string Name, Func<int, RequestTarget> Create)[] Targets =
    [
        ("Single32", callers => new SingleCallsTarget(callers, MultiItemBenchmarks.ItemsPerCall)),
        ("Many32", callers => new ManyCallTarget(callers, MultiItemBenchmarks.ItemsPerCall)),
        ("Direct32", callers => new DirectTarget(callers, MultiItemBenchmarks.ItemsPerCall)),
    ];

    public static int Run(string[] args, string command)
    {
        int rounds = ClosedLoopHarness.IntOption(args, "--rounds", 3);
        double seconds = double.Parse(Program.OptionValue(args, "--seconds") ?? "2", CultureInfo.InvariantCulture);
        int[] callerCounts = [.. (Program.OptionValue(args, "--callers") ?? "1,8").Split(',').Select(c => int.Parse(c, CultureInfo.InvariantCulture))];
        string output = Program.OptionValue(args, "--out") ?? Paths.Results;
        bool quick = args.Contains("--quick");

        var nanoseconds = new Dictionary<(string, int), List<double>>();
        var bytes = new Dictionary<(string, int), List<double>>();
        var batches = new Dictionary<(string, int), List<double>>();
        var ratios = callerCounts.ToDictionary(c => c, _ => new List<double>());
        for (int round = 0; round < rounds; round++)
        {
            foreach (int callers in callerCounts)
            {
                var perRound = new Dictionary<string, double>();
                for (int k = 0; k < Targets.Length; k++)
                {
                    var (name, create) = Targets[(k + round) % Targets.Length];
                    (double rate, double allocated, double batch) = ClosedLoopHarness.Measure(() => create(callers), callers, TimeSpan.FromSeconds(seconds));
                    perRound[name] = 1e9 / rate;
                    Add(nanoseconds, (name, callers), 1e9 / rate);
                    Add(bytes, (name, callers), allocated);
                    Add(batches, (name, callers), batch);
                    Console.WriteLine($"round {round + 1}/{rounds} C={callers} {name,-8} {rate,12:N0} items/s {1e9 / rate,8:0.0} ns/item {allocated,6:0.00} B/item mean batch {batch:0.0}");
                }

                ratios[callers].Add((perRound["Many32"] - perRound["Direct32"]) / (perRound["Single32"] - perRound["Direct32"]));
            }
        }

        var measured = nanoseconds.ToDictionary(kv => kv.Key,
            kv => new PerItem(ClosedLoopHarness.Median(kv.Value), ClosedLoopHarness.Median(bytes[kv.Key]), ClosedLoopHarness.Median(batches[kv.Key])));
        string checks = MultiItemReport.Check(measured);
        StringBuilder page = ResultsPage.Start("Multi-item calls: cost per item of ProcessManyAsync against single calls (stopwatch)", command, quick)
            .AppendLine(CultureInfo.InvariantCulture, $"- {rounds} rounds; each round runs every target at each C once for {seconds:0.#} s after a {seconds / 4:0.##} s warm-up, the starting target rotating per round. The table and the targets use the medians over the rounds.")
            .AppendLine()
            .AppendLine(MultiItemReport.Setup)
            .AppendTargets(checks);
        foreach (int callers in callerCounts)
        {
            page.AppendLine(CultureInfo.InvariantCulture,
                $"- C={callers}: per-round overhead ratio Many32 / Single32 {ratios[callers].Min():0.000}x – {ratios[callers].Max():0.000}x (median {ClosedLoopHarness.Median(ratios[callers]):0.000}x)");
        }

        page.AppendLine().AppendLine("## Per item (medians)").AppendLine();
        MultiItemReport.Table(page, measured);
        Console.WriteLine();
        Console.Write(page.ToString());
        ResultsPage.Write(page, output, "multi-item-stopwatch", quick);
        return 0;
    }

    private static void Add(Dictionary<(string, int), List<double>> values, (string, int) key, double value)
    {
        if (!values.TryGetValue(key, out List<double>? list))
        {
            values[key] = list = [];
        }

        list.Add(value);
    }
}
