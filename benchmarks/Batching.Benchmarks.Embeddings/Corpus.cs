using System.Text.RegularExpressions;
using Batching.Samples.EmbeddingService.Model;

namespace Batching.Benchmarks.Embeddings;

/// <summary>
/// Real English sentences of mixed length: the prose of this repository's README and docs, split into sentences,
/// code, tables and headings dropped, kept from 6 to 96 tokens and shuffled with a fixed seed. Every system reads the
/// same sentences in the same order.
/// </summary>
internal static partial class Corpus
{
    public static string[] Load(MiniLmModel model, string repoRoot)
    {
        var files = new List<string> { Path.Combine(repoRoot, "README.md") };
        string docs = Path.Combine(repoRoot, "docs");
        if (Directory.Exists(docs))
        {
            files.AddRange(Directory.EnumerateFiles(docs, "*.md").Order(StringComparer.Ordinal));
        }

        var sentences = new List<string>();
        foreach (string file in files)
        {
            bool code = false;
            foreach (string raw in File.ReadLines(file))
            {
                string line = raw.Trim();
                if (line.StartsWith("```", StringComparison.Ordinal))
                {
                    code = !code;
                    continue;
                }

                if (code || line.Length == 0 || line[0] is '#' or '|' or '<' or '!' or '>')
                {
                    continue;
                }

                string prose = Markup().Replace(line.TrimStart('-', '*', ' '), "");
                foreach (string sentence in SentenceEnd().Split(prose))
                {
                    int tokens = model.CountTokens(sentence);
                    if (tokens is >= 6 and <= 96)
                    {
                        sentences.Add(sentence.Trim());
                    }
                }
            }
        }

        string[] corpus = [.. sentences.Distinct(StringComparer.Ordinal)];
        new Random(42).Shuffle(corpus);
        return corpus;
    }

    [GeneratedRegex(@"[`*_\[\]]|\]\([^)]*\)")]
    private static partial Regex Markup();

    [GeneratedRegex(@"(?<=[.!?;])\s+")]
    private static partial Regex SentenceEnd();
}
