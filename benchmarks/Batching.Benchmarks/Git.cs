using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Batching.Benchmarks;

internal static class Git
{
    /// <summary>The commit the results were measured on, so a results page can be traced to the engine it measured.</summary>
    public static string Describe()
    {
        try
        {
            using var git = Process.Start(new ProcessStartInfo("git", "log -1 --format=\"%h %s\"")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = Paths.RepoRoot ?? Environment.CurrentDirectory,
            })!;
            string line = git.StandardOutput.ReadToEnd().Trim();
            git.WaitForExit();
            return git.ExitCode == 0 && line.Length > 0 ? line : "unknown";
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return "unknown";
        }
    }
}

internal static class Paths
{
    /// <summary>The repository root (the folder holding Batching.sln), or null when run outside a checkout.</summary>
    public static string? RepoRoot { get; } = Find(Environment.CurrentDirectory) ?? Find(AppContext.BaseDirectory);

    public static string Results => RepoRoot is null ? Path.Combine(Environment.CurrentDirectory, "results") : Path.Combine(RepoRoot, "benchmarks", "results");

    private static string? Find(string start)
    {
        for (DirectoryInfo? dir = new(start); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Batching.sln")))
            {
                return dir.FullName;
            }
        }

        return null;
    }
}

internal static class Machine
{
    public static string LoadAverageAtStart { get; set; } = "unknown";

    /// <summary>The process priority the curves ran at.</summary>
    public static string Priority { get; private set; } = "Normal";

    /// <summary>
    /// Raises the process to High priority, as BenchmarkDotNet does for its benchmark processes, so that other work
    /// on a shared machine disturbs the open-loop timing less. Call it before any thread starts: on Linux new
    /// threads inherit the priority of the thread that creates them.
    /// </summary>
    public static void RaisePriority()
    {
        try
        {
            using var self = Process.GetCurrentProcess();
            self.PriorityClass = ProcessPriorityClass.High;
            Priority = "High";
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or PlatformNotSupportedException or UnauthorizedAccessException)
        {
            Priority = "Normal (raising it was refused)";
        }
    }

    /// <summary>The 1-, 5- and 15-minute load averages: on a shared 2-core VM, other work moves every number.</summary>
    public static string LoadAverage()
    {
        try
        {
            string[] parts = File.ReadAllText("/proc/loadavg").Split(' ');
            return $"{parts[0]} / {parts[1]} / {parts[2]}";
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    /// <summary>The CPU model, for the results pages.</summary>
    public static string Cpu()
    {
        try
        {
            string? model = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            return model is null ? RuntimeInformation.ProcessArchitecture.ToString() : model.Split(':', 2)[1].Trim();
        }
        catch (IOException)
        {
            return RuntimeInformation.ProcessArchitecture.ToString();
        }
    }
}
