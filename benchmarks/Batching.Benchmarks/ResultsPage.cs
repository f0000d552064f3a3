using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Batching.Benchmarks;

/// <summary>The head of a results page: what ran, where, when, on which commit, and how busy the machine was.</summary>
internal static class ResultsPage
{
    public static StringBuilder Start(string title, string command, bool quick, TimeSpan? took = null)
    {
        var inv = CultureInfo.InvariantCulture;
        var page = new StringBuilder()
            .AppendLine(inv, $"# {title}{(quick ? " (quick smoke run: numbers mean nothing)" : "")}")
            .AppendLine()
            .AppendLine(inv, $"- Machine: {Environment.ProcessorCount} logical CPUs, {Machine.Cpu()}, {RuntimeInformation.OSDescription}, .NET {Environment.Version}")
            .AppendLine(inv, $"- Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC{(took is { } t ? $"; the run took {t.TotalSeconds:0} s" : "")}")
            .AppendLine(inv, $"- Command: `{command}`")
            .AppendLine(inv, $"- Commit: {Git.Describe()}")
            .AppendLine(inv, $"- Load average (1/5/15 min) at start: {Machine.LoadAverageAtStart}; at end: {Machine.LoadAverage()} (other work on the machine moves the numbers); process priority: {Machine.Priority}");
        return page;
    }

    /// <summary>Writes the page as <paramref name="name"/>.md (or name-quick.md) in <paramref name="directory"/> and says so.</summary>
    public static string Write(StringBuilder page, string directory, string name, bool quick)
    {
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, quick ? $"{name}-quick.md" : $"{name}.md");
        File.WriteAllText(path, page.ToString());
        Console.WriteLine($"Wrote {path}");
        return path;
    }

    /// <summary>The page's "Targets" section: the PASS/FAIL lines as one code block, between blank lines.</summary>
    public static StringBuilder AppendTargets(this StringBuilder page, string checks) =>
        page.AppendLine().AppendLine("## Targets").AppendLine().AppendLine("```").Append(checks).AppendLine("```").AppendLine();

    public static string Line(bool pass, string text) => $"{(pass ? "PASS" : "FAIL")} {text}";
}
