using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using ScottPlot;

namespace Batching.Benchmarks.Generation;

/// <summary>
/// Issue 11's comparison: continuous batching (<see cref="GenerationProcessor"/>) against request-level static batching
/// through <see cref="IBatchProcessor{TIn, TOut}"/> (each batch runs every request in it to the longest one's end) and
/// against one sequence at a time, on a simulated device whose step over n sequences costs <c>a + b·n</c>. Output
/// lengths as in Anyscale's setup: exponential with mean 128, clamped to 32..1536, seeded.
/// </summary>
internal static class GenerationSweep
{
    private sealed record Settings(double FixedUs, double PerSequenceUs, TimeSpan Saturation, TimeSpan Latency, TimeSpan Warmup, TimeSpan Overhead, bool Quick);

    private static readonly Settings Full = new(2000, 25, TimeSpan.FromSeconds(20), TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(5), false);
    private static readonly Settings QuickSettings = new(2000, 25, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(0.3), TimeSpan.FromSeconds(0.5), true);
    private const int Slots = 64;

    private sealed record Latencies(int Requests, int Unfinished, double Ttft50, double Ttft99, double Itl50, double Itl99);

    public static int Run(string[] args, string command)
    {
        Settings settings = args.Contains("--quick") ? QuickSettings : Full;
        string output = Program.OptionValue(args, "--out") ?? Paths.Results;
        var started = Stopwatch.StartNew();
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine($"generation: device step a + b·n = {settings.FixedUs} + {settings.PerSequenceUs}·n µs, {Slots} slots");

        (double continuous, double staticTps, double sequential) = (
            Saturation(System.Continuous, settings), Saturation(System.Static, settings), Saturation(System.Sequential, settings));
        Console.WriteLine($"saturation tokens/s: continuous {continuous:0}, static {staticTps:0}, one at a time {sequential:0}");
        double meanLength = LengthSampler.Mean(20_000);
        double staticRequestsPerSecond = staticTps / meanLength;
        var rows = new List<(System System, int LoadPercent, Latencies? Result)>();
        foreach (int load in new[] { 50, 90 })
        {
            double rate = staticRequestsPerSecond * load / 100;
            foreach (System system in Enum.GetValues<System>())
            {
                double capacity = system switch { System.Continuous => continuous, System.Static => staticTps, _ => sequential } / meanLength;
                Latencies? result = rate < capacity * 0.98 ? OpenLoop(system, rate, settings) : null;
                rows.Add((system, load, result));
                Console.WriteLine(result is null ? $"{system} at {load}%: overloaded (arrivals {rate:0.0}/s > capacity {capacity:0.0}/s)"
                    : $"{system} at {load}% ({rate:0.0} req/s): TTFT p50 {result.Ttft50:0.0} ms p99 {result.Ttft99:0.0} ms, ITL p50 {result.Itl50:0.00} ms p99 {result.Itl99:0.00} ms");
            }
        }

        (double cpuUs, double bytes, long tokens) = HostOverhead(settings.Overhead);
        Console.WriteLine($"host overhead: {cpuUs:0.000} µs CPU and {bytes:0.0} B allocated per token per sequence ({tokens} tokens)");

        StringBuilder page = ResultsPage.Start("Continuous batching (issue 11): throughput and latency against static batching", command, settings.Quick, started.Elapsed);
        page.AppendLine(inv, $"- Device: simulated, a step over n sequences takes {settings.FixedUs} + {settings.PerSequenceUs}·n µs (a decoder step's shape — a large fixed cost per step, a small one per sequence — at one tenth of the time of a 13B model on an A100, about 20 ms + 0.25 ms·n); {Slots} sequences per step at most (MaxSequences = MaxBatchSize = {Slots}). The device wait is a precise sleep on the step's thread, so no host CPU is spent meanwhile.")
            .AppendLine(inv, $"- Output lengths: exponential, mean 128, clamped to 32..1536 (measured mean {meanLength:0.0}), seeded; the same sequence of lengths for every system.")
            .AppendLine("- Static: `BatchProcessor` (Adaptive policy, MaxBatchSize 64) whose handler runs its batch of n requests for max(length) steps of a + b·n (padded); its tokens are timed as if streamed after each step, which flatters it. One at a time: the same handler with MaxBatchSize 1.")
            .AppendLine("- Continuous: `GenerationProcessor` (MaxSequences 64), consumers enumerate with `await foreach`; times measured at the consumer.")
            .AppendLine(inv, $"- Saturation: closed loop with 256 requests outstanding ({settings.Saturation.TotalSeconds:0.#} s, the first {settings.Warmup.TotalSeconds:0.#} s not counted). Latency: open-loop Poisson arrivals at 50% and 90% of the static batcher's measured capacity ({staticRequestsPerSecond:0.00} requests/s), {settings.Latency.TotalSeconds:0.#} s each, warm-up excluded.")
            .AppendLine()
            .AppendLine("## Saturation throughput")
            .AppendLine()
            .AppendLine("| system | tokens/s | vs static |")
            .AppendLine("|---|---:|---:|")
            .AppendLine(inv, $"| continuous batching | {continuous:0} | {continuous / staticTps:0.00}x |")
            .AppendLine(inv, $"| static (request-level) batching | {staticTps:0} | 1.00x |")
            .AppendLine(inv, $"| one sequence at a time | {sequential:0} | {sequential / staticTps:0.00}x |")
            .AppendLine()
            .AppendLine("## Latency under open-loop load (ms)")
            .AppendLine()
            .AppendLine("| load (of static capacity) | system | requests | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 |")
            .AppendLine("|---|---|---:|---:|---:|---:|---:|");
        foreach (var (system, load, result) in rows)
        {
            page.AppendLine(result is null
                ? string.Create(inv, $"| {load}% | {Label(system)} | overloaded: arrivals exceed its capacity | | | | |")
                : string.Create(inv, $"| {load}% | {Label(system)} | {result.Requests}{(result.Unfinished > 0 ? $" ({result.Unfinished} unfinished)" : "")} | {result.Ttft50:0.0} | {result.Ttft99:0.0} | {result.Itl50:0.00} | {result.Itl99:0.00} |"));
        }

        page.AppendLine()
            .AppendLine("## Host overhead")
            .AppendLine()
            .AppendLine(inv, $"A step that costs nothing, 64 sequences of 1,024 tokens in a closed loop with `await foreach` consumers, {settings.Overhead.TotalSeconds:0.#} s: **{cpuUs:0.000} µs of process CPU and {bytes:0.0} B allocated per token per sequence** ({tokens} tokens; CPU includes the consumers' own loop and their thread-pool resumption, allocations include the per-request objects).")
            .AppendLine();
        Latencies? c50 = rows.Single(r => r.System == System.Continuous && r.LoadPercent == 50).Result;
        Latencies? s50 = rows.Single(r => r.System == System.Static && r.LoadPercent == 50).Result;
        var checks = new StringBuilder()
            .AppendLine(ResultsPage.Line(continuous >= 4 * staticTps, string.Create(inv, $"saturation throughput >= 4x static: {continuous / staticTps:0.00}x")))
            .AppendLine(ResultsPage.Line(c50 is not null && s50 is not null && c50.Ttft99 < s50.Ttft50,
                string.Create(inv, $"p99 TTFT at 50% load below static's p50: {c50?.Ttft99:0.0} ms vs {s50?.Ttft50:0.0} ms")))
            .AppendLine(ResultsPage.Line(cpuUs <= 1.0, string.Create(inv, $"host overhead per token per sequence <= 1 µs: {cpuUs:0.000} µs")))
            .AppendLine(ResultsPage.Line(bytes < 1.0, string.Create(inv, $"no allocation per token in steady state: {bytes:0.0} B per token (per-request objects amortised over ~1,024 tokens)")));
        page.AppendTargets(checks.ToString());
        page.AppendLine("![throughput](generation.png)");
        ResultsPage.Write(page, output, "generation", settings.Quick);
        Plot(continuous, staticTps, sequential, Path.Combine(output, settings.Quick ? "generation-quick.png" : "generation.png"));
        Console.Write(checks);
        return 0;
    }

    private enum System
    {
        Continuous,
        Static,
        Sequential,
    }

    private static string Label(System system) => system switch
    {
        System.Continuous => "continuous batching",
        System.Static => "static batching",
        _ => "one at a time",
    };

    /// <summary>Tokens per second with 256 requests always outstanding.</summary>
    private static double Saturation(System system, Settings settings)
    {
        using var device = new Device(settings.FixedUs, settings.PerSequenceUs);
        var lengths = new LengthSampler(seed: 11);
        var end = Stopwatch.GetTimestamp() + (long)(settings.Saturation.TotalSeconds * Stopwatch.Frequency);
        using var runner = Runner.Create(system, device);
        var loops = Enumerable.Range(0, 256).Select(async _ =>
        {
            await Task.Yield();
            while (Stopwatch.GetTimestamp() < end)
            {
                int length;
                lock (lengths)
                {
                    length = lengths.Next();
                }

                await runner.RunAsync(length, null).ConfigureAwait(false);
            }
        }).ToArray();
        Thread.Sleep(settings.Warmup);
        long from = device.Tokens, fromTime = Stopwatch.GetTimestamp();
        Thread.Sleep(settings.Saturation - settings.Warmup);
        long tokens = device.Tokens - from;
        double seconds = Stopwatch.GetElapsedTime(fromTime).TotalSeconds;
        runner.Stop();
        Task.WhenAll(loops).Wait(TimeSpan.FromSeconds(30));
        return tokens / seconds;
    }

    /// <summary>Open-loop Poisson arrivals at <paramref name="rate"/> requests/s; latencies of those that arrived after the warm-up.</summary>
    private static Latencies OpenLoop(System system, double rate, Settings settings)
    {
        using var device = new Device(settings.FixedUs, settings.PerSequenceUs);
        using var runner = Runner.Create(system, device);
        var lengths = new LengthSampler(seed: 12);
        var gaps = new Random(13);
        var recorders = new ConcurrentBag<Recorder>();
        var running = new List<Task>();
        long start = Stopwatch.GetTimestamp();
        long warm = start + (long)(settings.Warmup.TotalSeconds * Stopwatch.Frequency);
        long end = start + (long)(settings.Latency.TotalSeconds * Stopwatch.Frequency);
        long next = start;
        while (next < end)
        {
            Device.WaitUntil(next);
            var recorder = new Recorder(Stopwatch.GetTimestamp());
            if (next >= warm)
            {
                recorders.Add(recorder);
            }

            running.Add(runner.RunAsync(lengths.Next(), recorder));
            next += (long)(-Math.Log(1 - gaps.NextDouble()) / rate * Stopwatch.Frequency);
        }

        Task.WhenAll(running).Wait(TimeSpan.FromSeconds(settings.Quick ? 5 : 60));
        runner.Stop();
        var finished = recorders.Where(r => r.Done).ToList();
        double[] ttft = [.. finished.Select(r => r.TtftMs).Order()];
        double[] itl = [.. finished.SelectMany(r => r.Gaps).Order()];
        return new Latencies(finished.Count, recorders.Count - finished.Count, Percentile(ttft, 0.5), Percentile(ttft, 0.99), Percentile(itl, 0.5), Percentile(itl, 0.99));
    }

    private static double Percentile(double[] sorted, double p) => sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];

    /// <summary>Process CPU and allocation per token with a step that costs nothing.</summary>
    private static (double CpuUs, double Bytes, long Tokens) HostOverhead(TimeSpan duration)
    {
        long tokens = 0;
        var processor = GenerationProcessor.Create<int, int, int>(length => length, static (states, tokensOut, finished, _) =>
        {
            Span<int> s = states.Span;
            Span<int> t = tokensOut.Span;
            Span<bool> f = finished.Span;
            for (int i = 0; i < s.Length; i++)
            {
                t[i] = s[i];
                f[i] = --s[i] == 0;
            }

            return default;
        }, new GenerationOptions { MaxSequences = Slots, MaxTokensPerSequence = 1024, StepTimeout = Timeout.InfiniteTimeSpan });
        long end = 0;
        bool measuring = false;
        var consumers = Enumerable.Range(0, Slots).Select(async _ =>
        {
            await Task.Yield();
            while (Volatile.Read(ref end) == 0 || Stopwatch.GetTimestamp() < Volatile.Read(ref end))
            {
                long mine = 0;
                await foreach (int token in processor.GenerateAsync(1024).ConfigureAwait(false))
                {
                    mine += token > 0 ? 1 : 0;
                }

                if (Volatile.Read(ref measuring))
                {
                    Interlocked.Add(ref tokens, mine);
                }
            }
        }).ToArray();
        Thread.Sleep(500);
        using var self = Process.GetCurrentProcess();
        Volatile.Write(ref measuring, true);
        self.Refresh();
        TimeSpan cpu0 = self.TotalProcessorTime;
        long bytes0 = GC.GetTotalAllocatedBytes(precise: true);
        Volatile.Write(ref end, Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency));
        Task.WhenAll(consumers).Wait(duration + TimeSpan.FromSeconds(30));
        self.Refresh();
        double cpuUs = (self.TotalProcessorTime - cpu0).TotalMicroseconds;
        long bytes = GC.GetTotalAllocatedBytes(precise: true) - bytes0;
        processor.DisposeAsync().AsTask().Wait();
        long total = Math.Max(1, Interlocked.Read(ref tokens));
        return (cpuUs / total, (double)bytes / total, total);
    }

    private static void Plot(double continuous, double staticTps, double sequential, string path)
    {
        var plot = new Plot();
        var bars = plot.Add.Bars(new[] { continuous, staticTps, sequential });
        plot.Axes.Bottom.SetTicks([0, 1, 2], ["continuous batching", "static batching", "one at a time"]);
        plot.Title("Saturation throughput, simulated decoder step a + b·n (tokens/s)");
        plot.YLabel("tokens/s");
        plot.Axes.Margins(bottom: 0);
        _ = bars;
        plot.SavePng(path, 900, 600);
    }

    /// <summary>When one request's tokens arrived.</summary>
    private sealed class Recorder(long submitted)
    {
        private long _last = submitted;
        private bool _seenFirst;

        public List<double> Gaps { get; } = [];

        public double TtftMs { get; private set; }

        public bool Done { get; set; }

        public void Token(long at)
        {
            double ms = (at - _last) * 1000.0 / Stopwatch.Frequency;
            if (!_seenFirst)
            {
                _seenFirst = true;
                TtftMs = ms;
            }
            else
            {
                Gaps.Add(ms);
            }

            _last = at;
        }
    }

    /// <summary>Exponential output lengths, mean 128, clamped to 32..1536.</summary>
    private sealed class LengthSampler(int seed)
    {
        private readonly Random _random = new(seed);

        public static double Mean(int samples)
        {
            var sampler = new LengthSampler(99);
            return Enumerable.Range(0, samples).Average(_ => sampler.Next());
        }

        public int Next() => Math.Clamp((int)Math.Round(-128 * Math.Log(1 - _random.NextDouble())), 32, 1536);
    }

    /// <summary>The simulated device: a step over n sequences holds its thread for a + b·n without using the CPU.</summary>
    private sealed class Device(double fixedUs, double perSequenceUs) : IDisposable
    {
        private long _tokens;

        public long Tokens => Interlocked.Read(ref _tokens);

        public void Step(int sequences, int tokens)
        {
            WaitUntil(Stopwatch.GetTimestamp() + (long)((fixedUs + perSequenceUs * sequences) * Stopwatch.Frequency / 1e6));
            Interlocked.Add(ref _tokens, tokens);
        }

        /// <summary>Sleeps most of the wait, then yields until the due time: precise to a few µs, nearly no CPU.</summary>
        public static void WaitUntil(long due)
        {
            while (true)
            {
                long left = due - Stopwatch.GetTimestamp();
                if (left <= 0)
                {
                    return;
                }

                if (left > Stopwatch.Frequency / 700)
                {
                    Thread.Sleep(1);
                }
                else
                {
                    Thread.Yield();
                }
            }
        }

        public void Dispose()
        {
        }
    }

    /// <summary>One system under test: run one request of <c>length</c> tokens, timing its tokens into the recorder.</summary>
    private abstract class Runner : IDisposable
    {
        public static Runner Create(System system, Device device) => system switch
        {
            System.Continuous => new ContinuousRunner(device),
            System.Static => new StaticRunner(device, Slots),
            _ => new StaticRunner(device, 1),
        };

        public abstract Task RunAsync(int length, Recorder? recorder);

        public abstract void Stop();

        public void Dispose() => Stop();
    }

    private sealed class ContinuousRunner : Runner
    {
        private readonly IGenerationProcessor<int, int> _processor;

        public ContinuousRunner(Device device)
        {
            _processor = GenerationProcessor.Create<int, int, int>(length => length, (states, tokens, finished, _) =>
            {
                Span<int> s = states.Span;
                Span<bool> f = finished.Span;
                for (int i = 0; i < s.Length; i++)
                {
                    tokens.Span[i] = s[i];
                    f[i] = --s[i] == 0;
                }

                device.Step(s.Length, s.Length);
                return default;
            }, new GenerationOptions { MaxSequences = Slots, MaxTokensPerSequence = 2048, QueueCapacity = 1 << 20, StepTimeout = Timeout.InfiniteTimeSpan, ShutdownTimeout = TimeSpan.Zero });
        }

        public override async Task RunAsync(int length, Recorder? recorder)
        {
            try
            {
                await foreach (int _ in _processor.GenerateAsync(length).ConfigureAwait(false))
                {
                    recorder?.Token(Stopwatch.GetTimestamp());
                }

                recorder?.Done = true;
            }
            catch (ObjectDisposedException)
            {
                // Stopped at the end of the run.
            }
        }

        public override void Stop() => _processor.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(30));
    }

    private sealed class StaticRunner : Runner
    {
        private readonly IBatchProcessor<Request, int> _processor;

        public StaticRunner(Device device, int batchSize)
        {
            _processor = BatchProcessor.Create<Request, int>((inputs, outputs, _) =>
            {
                int longest = 0;
                foreach (Request request in inputs.Span)
                {
                    longest = Math.Max(longest, request.Length);
                }

                // Every step runs the whole (padded) batch until the longest request ends.
                for (int step = 0; step < longest; step++)
                {
                    int producing = 0;
                    foreach (Request request in inputs.Span)
                    {
                        producing += step < request.Length ? 1 : 0;
                    }

                    device.Step(inputs.Length, producing);
                    long now = Stopwatch.GetTimestamp();
                    foreach (Request request in inputs.Span)
                    {
                        if (step < request.Length)
                        {
                            request.Recorder?.Token(now);
                        }
                    }
                }

                for (int i = 0; i < outputs.Length; i++)
                {
                    outputs.Span[i] = inputs.Span[i].Length;
                }

                return default;
            }, new BatchingOptions { MaxBatchSize = batchSize, QueueCapacity = 1 << 20, ExecutionTimeout = Timeout.InfiniteTimeSpan, ShutdownTimeout = TimeSpan.Zero });
        }

        public override async Task RunAsync(int length, Recorder? recorder)
        {
            try
            {
                await _processor.ProcessAsync(new Request(length, recorder)).ConfigureAwait(false);
                recorder?.Done = true;
            }
            catch (ObjectDisposedException)
            {
                // Stopped at the end of the run.
            }
        }

        public override void Stop() => _processor.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(30));
    }

    private sealed record Request(int Length, Recorder? Recorder);
}
