using System.Globalization;
using System.Text;
using Batching.Samples.EmbeddingService.Model;
using Microsoft.Extensions.AI;

namespace Batching.Benchmarks.Embeddings;

/// <summary>One way of serving the model: its ONNX Runtime threads and its batching (none when <see cref="Batching"/> is null).</summary>
internal sealed record Setup(string Name, string Settings, int Threads, double MaxPadding, Action<BatchingOptions, MiniLmModel>? Batching);

/// <summary>
/// all-MiniLM-L6-v2 on ONNX Runtime, closed loop, C callers each embedding one sentence per call:
///   [--callers 1,16,64] [--rounds 3] [--seconds S] [--warmup S] [--out DIR]   the table of issue 12; writes embeddings.md
///   --sweep [--callers 64]                                        every candidate setup at C callers, for tuning
///   --quick                                                       a few seconds of each, into a temp folder (numbers mean nothing)
/// </summary>
public static class Program
{
    private static readonly Setup Unbatched = new("unbatched", "ONNX Runtime default threads, one run per call", 0, 1, null);

    private static readonly Setup UnbatchedOneThread = new("unbatched, 1 thread per run", "IntraOpThreads 1, one run per call", 1, 1, null);

    private static readonly Setup LibraryDefault = new("library, default options",
        "UseBatching() with default options (MaxBatchSize 100, Adaptive), ONNX Runtime default threads, each batch one run padded to its longest (MaxPadding 1)",
        0, 1, (_, _) => { });

    private static readonly Setup[] Candidates =
    [
        Unbatched,
        UnbatchedOneThread,
        LibraryDefault,
        Batched("default options, sorted runs", 0, 100, 1, 0.15),
        Batched("T0 size16 sorted", 0, 16, 1, 0.15),
        Batched("T0 size64 sorted", 0, 64, 1, 0.15),
        Batched("T0 size64 budget512", 0, 64, 1, 1, 512),
        Batched("T0 size64 budget512 sorted", 0, 64, 1, 0.15, 512),
        Batched("T1 size8 x2", 1, 8, 2, 1),
        Batched("T1 size16 x2", 1, 16, 2, 1),
        Batched("T1 size16 x2 sorted", 1, 16, 2, 0.15),
        Batched("T1 size32 x2 sorted", 1, 32, 2, 0.15),
        Batched("T1 size64 x2 sorted", 1, 64, 2, 0.15),
        Batched("T0 size64 sorted 0.3", 0, 64, 1, 0.3),
        Batched("T0 size64 sorted 0.05", 0, 64, 1, 0.05),
    ];

    public static async Task<int> Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        Machine.LoadAverageAtStart = Machine.LoadAverage();
        bool quick = args.Contains("--quick");
        bool sweep = args.Contains("--sweep");
        int[] callers = Option(args, "--callers") is { } list ? [.. list.Split(',').Select(int.Parse)] : sweep ? [64] : quick ? [1, 4] : [1, 16, 64];
        TimeSpan duration = TimeSpan.FromSeconds(double.Parse(Option(args, "--seconds") ?? (quick ? "1" : "10"), CultureInfo.InvariantCulture));
        TimeSpan warmup = TimeSpan.FromSeconds(double.Parse(Option(args, "--warmup") ?? (quick ? "0.5" : "3"), CultureInfo.InvariantCulture));
        string output = Option(args, "--out") ?? (quick ? Path.Combine(Path.GetTempPath(), "batching-bench-quick") : Paths.Results);
        string command = "dotnet run -c Release --project benchmarks/Batching.Benchmarks.Embeddings --" + (args.Length > 0 ? " " + string.Join(' ', args) : "");
        Machine.RaisePriority();
        // Blocked callers (the unbatched runs are synchronous) must not wait for the thread pool to grow.
        ThreadPool.GetMinThreads(out int workers, out int io);
        ThreadPool.SetMinThreads(Math.Max(workers, callers.Max() + 8), io);

        var models = new Dictionary<(int, double), MiniLmModel>();
        MiniLmModel ModelFor(int threads, double maxPadding = 1)
        {
            if (!models.TryGetValue((threads, maxPadding), out MiniLmModel? model))
            {
                models[(threads, maxPadding)] = model = new MiniLmModel(new ModelOptions { Device = ExecutionDevice.Cpu, IntraOpThreads = threads, MaxPadding = maxPadding });
                model.Embed(["warm-up"]);
            }

            return model;
        }

        string[] corpus = Corpus.Load(ModelFor(0), Paths.RepoRoot ?? Environment.CurrentDirectory);
        int[] lengths = [.. corpus.Select(ModelFor(0).CountTokens).Order()];
        Console.WriteLine($"{corpus.Length} sentences, tokens p50 {lengths[lengths.Length / 2]}, mean {lengths.Average():F1}, max {lengths[^1]}; device {ModelFor(0).Device}");

        Setup[] setups = sweep ? Candidates : [Unbatched, UnbatchedOneThread, LibraryDefault, Tuned, TunedTwoBatches];
        int rounds = int.Parse(Option(args, "--rounds") ?? (quick || sweep ? "1" : "3"), CultureInfo.InvariantCulture);
        var results = new Dictionary<(string, int), List<Result>>();
        var started = DateTime.UtcNow;
        // Rounds, each running every system once with the starting system rotated: on a shared machine the load drifts,
        // and comparing systems within a round (then taking medians) keeps the drift out of the ratios.
        for (int round = 0; round < rounds; round++)
        {
            foreach (int c in callers)
            {
                for (int k = 0; k < setups.Length; k++)
                {
                    Setup setup = setups[(k + round) % setups.Length];
                    Result r = await RunAsync(setup, ModelFor(setup.Threads, setup.MaxPadding), corpus, c, warmup, duration);
                    (results.TryGetValue((setup.Name, c), out List<Result>? seen) ? seen : results[(setup.Name, c)] = []).Add(r);
                    Console.WriteLine($"round {round + 1} C={c,3} {setup.Name,-40} {r.SentencesPerSecond,7:F1}/s p50 {r.P50Ms,8:F1} ms p99 {r.P99Ms,8:F1} ms  batch {r.MeanBatch,5:F1} run {r.MeanRun,5:F1}  padding {r.PaddingShare:P0}  load {Machine.LoadAverage()}");
                }
            }
        }

        if (!sweep)
        {
            StringBuilder page = Page.Build(command, quick, DateTime.UtcNow - started, corpus, lengths, ModelFor(0).Device, callers, rounds, setups, results,
                Unbatched, UnbatchedOneThread, LibraryDefault, Tuned);
            ResultsPage.Write(page, output, "embeddings", quick);
        }

        foreach (MiniLmModel model in models.Values)
        {
            model.Dispose();
        }

        return 0;
    }

    /// <summary>The tuned setup, the service's own configuration (chosen with --sweep; see the results page).</summary>
    internal static Setup Tuned { get; } = Batched("library, tuned", 0, 64, 1, 0.15);

    /// <summary>The runner-up: one ONNX Runtime thread per run, two batches at a time.</summary>
    internal static Setup TunedTwoBatches { get; } = Batched("library, tuned, 1 thread x 2 batches", 1, 32, 2, 0.15);

    private static Setup Batched(string name, int threads, int size, int concurrent, double maxPadding, int budget = 0) => new(name,
        $"IntraOpThreads {threads}{(threads == 0 ? " (ONNX Runtime's default)" : "")}, MaxBatchSize {size}, MaxConcurrentBatches {concurrent}, "
        + (budget > 0 ? $"ItemWeight = token count with MaxBatchWeight {budget}, " : "")
        + (maxPadding < 1 ? $"each batch sorted by length and cut into runs of at most {maxPadding:P0} padding (Model:MaxPadding {maxPadding})" : "each batch one run padded to its longest (Model:MaxPadding 1)"),
        threads, maxPadding, (o, model) =>
        {
            o.MaxBatchSize = size;
            o.MaxConcurrentBatches = concurrent;
            if (budget > 0)
            {
                o.ItemWeight = (string text) => model.CountTokens(text);
                o.MaxBatchWeight = budget;
            }
        });

    private static async Task<Result> RunAsync(Setup setup, MiniLmModel model, string[] corpus, int callers, TimeSpan warmup, TimeSpan duration)
    {
        var counter = new RunCounter(new MiniLmEmbeddingGenerator(model), model);
        IEmbeddingGenerator<string, Embedding<float>> generator = setup.Batching is { } batching
            ? new EmbeddingGeneratorBuilder<string, Embedding<float>>(counter).UseBatching(o => batching(o, model)).Build()
            : counter;
        try
        {
            return await Measure.ClosedLoopAsync(generator, counter, corpus, callers, warmup, duration);
        }
        finally
        {
            generator.Dispose();
        }
    }

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
