// Soak: mixed load with random faults against several processors for a set time, then the books.
// Usage: dotnet run -c Release --project benchmarks/Batching.Soak -- [--minutes N | --seconds N]
//        [--workers N] [--sample-seconds N] [--seed N] [--max-growth-mb N]
// Exit code 0 only if no call was lost, wrong, unexplained or hung, every processor still serves
// afterwards, and the idle managed heap grew by less than --max-growth-mb.
using System.Diagnostics;
using System.Globalization;
using System.Runtime;
using Batching;
using Batching.Soak;
using Batching.Tests.Reliability;

SoakSettings settings;
try
{
    settings = SoakSettings.Parse(args);
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine(ex.Message);
    return 64;
}

return await new Soak(settings).RunAsync();

namespace Batching.Soak
{
    internal sealed record SoakSettings(TimeSpan Duration, int Workers, TimeSpan SampleEvery, int Seed, double MaxGrowthMb)
    {
        public static SoakSettings Parse(string[] args)
        {
            TimeSpan duration = TimeSpan.FromMinutes(10);
            int workers = 32, seed = 1;
            TimeSpan? sample = null;
            double maxGrowth = 16;
            for (int i = 0; i < args.Length; i++)
            {
                string value = i + 1 < args.Length ? args[i + 1] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--minutes": duration = TimeSpan.FromMinutes(double.Parse(value, CultureInfo.InvariantCulture)); break;
                    case "--seconds": duration = TimeSpan.FromSeconds(double.Parse(value, CultureInfo.InvariantCulture)); break;
                    case "--workers": workers = int.Parse(value, CultureInfo.InvariantCulture); break;
                    case "--sample-seconds": sample = TimeSpan.FromSeconds(double.Parse(value, CultureInfo.InvariantCulture)); break;
                    case "--seed": seed = int.Parse(value, CultureInfo.InvariantCulture); break;
                    case "--max-growth-mb": maxGrowth = double.Parse(value, CultureInfo.InvariantCulture); break;
                    default: throw new ArgumentException($"unknown option {args[i]}; see the header of Program.cs");
                }

                i++;
            }

            if (duration <= TimeSpan.Zero || workers < 1)
            {
                throw new ArgumentException("duration and workers must be positive");
            }

            // About 20 samples on a short run, one every 10 s on a long one.
            sample ??= TimeSpan.FromSeconds(Math.Clamp(duration.TotalSeconds / 20, 0.5, 10));
            return new SoakSettings(duration, workers, sample.Value, seed, maxGrowth);
        }
    }

    /// <summary>One processor under load, with its own books.</summary>
    internal sealed class Lane(string name, IBatchProcessor<int, int> processor, Ledger ledger, params FaultyHandler[] handlers)
    {
        public string Name { get; } = name;

        public IBatchProcessor<int, int> Processor { get; } = processor;

        public Ledger Ledger { get; } = ledger;

        public FaultyHandler[] Handlers { get; } = handlers;
    }

    internal sealed record Sample(TimeSpan At, long Submitted, long Pending, TimeSpan OldestPending, long HeapBytes, int Threads, int PoolThreads, int Gen2);

    internal sealed class Soak(SoakSettings settings)
    {
        private static readonly TimeSpan SettleBound = TimeSpan.FromSeconds(30);
        private readonly List<Lane> _lanes = [];
        private readonly Ledger _churnLedger = new("churn (dispose under load)", recordOutcomes: false);
        private readonly List<FaultyHandler> _churnHandlers = [];
        private readonly List<Sample> _samples = [];
        private long _churned;
        private TimeSpan _maxOldestPending;
        private IBatchProcessor<int, int>? _inner;

        public async Task<int> RunAsync()
        {
            Console.WriteLine($"Batching soak: {settings.Duration} of mixed load, {settings.Workers} workers, seed {settings.Seed}, " +
                $"{Environment.ProcessorCount} CPUs, .NET {Environment.Version}, {(GCSettings.IsServerGC ? "server" : "workstation")} GC");
            CreateLanes();
            int threadsAtStart = Process.GetCurrentProcess().Threads.Count;

            // Warm up (JIT, pools, dictionary growth), then measure the idle heap as the baseline.
            var warmUp = TimeSpan.FromSeconds(Math.Min(5, Math.Max(1, settings.Duration.TotalSeconds / 10)));
            await LoadAsync(warmUp, sample: false);
            await SettleAllAsync(TimeSpan.FromSeconds(10));
            long heapBefore = FullGcHeap();
            int threadsBefore = Process.GetCurrentProcess().Threads.Count;
            Console.WriteLine($"warm-up {warmUp.TotalSeconds:F0} s done; idle heap after full GC {Mb(heapBefore)}, threads {threadsBefore} (at start {threadsAtStart})");
            Console.WriteLine();
            Console.WriteLine("   time  submitted   pending  oldest-pending  heap(full GC)  threads  pool-threads  gen2");

            var clock = Stopwatch.StartNew();
            await LoadAsync(settings.Duration, sample: true);
            TimeSpan loadTime = clock.Elapsed;

            // Stop: every caller must finish; hung (token-ignoring) handler calls return after HangFor.
            LedgerReport[] reports = await SettleAllAsync(SettleBound);
            await WaitUntil(() => AllHandlers().All(h => h.HangsRunning == 0), TimeSpan.FromSeconds(10));
            long heapAfter = FullGcHeap();
            int threadsAfter = Process.GetCurrentProcess().Threads.Count;

            // Afterwards each processor must still serve correctly with its faults healed.
            var serviceChecks = new List<LedgerReport>();
            foreach (Lane lane in _lanes)
            {
                serviceChecks.Add(await StillServesAsync(lane));
            }

            foreach (Lane lane in _lanes.AsEnumerable().Reverse())
            {
                await lane.Processor.DisposeAsync();
            }

            if (_inner is not null)
            {
                await _inner.DisposeAsync();
            }

            long heapDisposed = FullGcHeap();
            return Report(loadTime, reports, serviceChecks, heapBefore, heapAfter, heapDisposed, threadsBefore, threadsAfter);
        }

        private void CreateLanes()
        {
            int seed = settings.Seed;

            // Deadline policy, waits when full, two slots, poison isolation, every kind of fault.
            var waitHandler = new FaultyHandler(record: false)
            {
                Plan = FaultyHandler.Random(seed, pThrow: 0.02, pHang: 0.003, pPartial: 0.02, pSlow: 0.05),
                IsPoison = x => x % 997 == 0,
                HangFor = TimeSpan.FromMilliseconds(300),
                SlowFor = TimeSpan.FromMilliseconds(2),
            };
            AddLane("wait/deadline", waitHandler, new BatchingOptions
            {
                Name = "wait/deadline",
                MaxBatchSize = 64,
                QueueCapacity = 1024,
                MaxConcurrentBatches = 2,
                ExecutionTimeout = TimeSpan.FromMilliseconds(100),
                PoisonIsolationDepth = 6,
                OutputCheck = OutputCheck.RejectDefault,
            });

            // Adaptive policy, a small queue that rejects when full, one slot.
            var rejectHandler = new FaultyHandler(record: false)
            {
                Plan = FaultyHandler.Random(seed + 1, pThrow: 0.02, pHang: 0.003, pPartial: 0.02, pSlow: 0.1),
                HangFor = TimeSpan.FromMilliseconds(300),
                SlowFor = TimeSpan.FromMilliseconds(1),
            };
            AddLane("reject/adaptive", rejectHandler, new BatchingOptions
            {
                Name = "reject/adaptive",
                MaxBatchSize = 32,
                QueueCapacity = 128,
                QueueFullMode = QueueFullMode.Reject,
                ExecutionTimeout = TimeSpan.FromMilliseconds(100),
                OutputCheck = OutputCheck.RejectDefault,
                FlushPolicy = FlushPolicy.Adaptive(),
            });

            // A handler that calls another (faulty) processor for each of its inputs.
            var innerHandler = new FaultyHandler(record: false)
            {
                Plan = FaultyHandler.Random(seed + 2, pThrow: 0.02, pHang: 0.002, pPartial: 0.02, pSlow: 0.05),
                IsPoison = x => x % 1009 == 0,
                HangFor = TimeSpan.FromMilliseconds(300),
                SlowFor = TimeSpan.FromMilliseconds(2),
            };
            _inner = BatchProcessor.Create(innerHandler.Handler, new BatchingOptions
            {
                Name = "inner",
                MaxBatchSize = 64,
                QueueCapacity = 2048,
                ExecutionTimeout = TimeSpan.FromMilliseconds(100),
                PoisonIsolationDepth = 3,
                OutputCheck = OutputCheck.RejectDefault,
                FlushPolicy = FlushPolicy.Size(16, 32, 64),
            });
            var outer = BatchProcessor.Create(ForwardingHandler.To(_inner), new BatchingOptions
            {
                Name = "nested",
                MaxBatchSize = 16,
                QueueCapacity = 512,
                MaxConcurrentBatches = 4,
                ExecutionTimeout = TimeSpan.FromSeconds(1),
                OutputCheck = OutputCheck.RejectDefault,
            });
            _lanes.Add(new Lane("nested", outer, new Ledger("nested", recordOutcomes: false), innerHandler));
        }

        private void AddLane(string name, FaultyHandler handler, BatchingOptions options) =>
            _lanes.Add(new Lane(name, BatchProcessor.Create(handler.Handler, options), new Ledger(name, recordOutcomes: false), handler));

        private IEnumerable<FaultyHandler> AllHandlers()
        {
            lock (_churnHandlers)
            {
                return _lanes.SelectMany(l => l.Handlers).Concat(_churnHandlers).ToArray();
            }
        }

        /// <summary>Closed-loop workers issue bursts to random lanes, some callers cancelling; a churn loop disposes processors under load.</summary>
        private async Task LoadAsync(TimeSpan duration, bool sample)
        {
            using var stop = new CancellationTokenSource(duration);
            var tasks = Enumerable.Range(0, settings.Workers)
                .Select(w => Task.Run(() => WorkerAsync(settings.Seed * 7919 + w + (sample ? 100_000 : 0), stop.Token)))
                .Append(Task.Run(() => ChurnAsync(stop.Token)))
                .ToList();
            if (sample)
            {
                tasks.Add(SampleAsync(stop.Token));
            }

            // A worker stuck on a hung call must not stall the soak: the books report the call as hung.
            try
            {
                await Task.WhenAll(tasks).WaitAsync(duration + SettleBound);
            }
            catch (TimeoutException)
            {
                Console.WriteLine($"warning: {tasks.Count(t => !t.IsCompleted)} load task(s) still blocked {SettleBound.TotalSeconds:F0} s after the load stopped");
            }
        }

        private async Task WorkerAsync(int seed, CancellationToken stop)
        {
            var random = new Random(seed);
            var calls = new List<Task>(32);
            var sources = new List<CancellationTokenSource>();
            while (!stop.IsCancellationRequested)
            {
                Lane lane = _lanes[random.Next(_lanes.Count)];
                int burst = random.Next(1, 33);
                for (int i = 0; i < burst; i++)
                {
                    int input = random.Next(1, 1 << 28);
                    CancellationToken token = default;
                    int roll = random.Next(100);
                    if (roll < 15)
                    {
                        // Cancel at a random moment: before the call, while queued, or while its batch runs.
                        var cts = new CancellationTokenSource();
                        sources.Add(cts);
                        token = cts.Token;
                        if (roll < 2)
                        {
                            cts.Cancel();
                        }
                        else
                        {
                            cts.CancelAfter(random.Next(0, 5));
                        }
                    }

                    calls.Add(lane.Ledger.Submit(lane.Processor, input, token));
                }

                await Task.WhenAll(calls);
                calls.Clear();
                foreach (CancellationTokenSource cts in sources)
                {
                    cts.Dispose();
                }

                sources.Clear();
            }
        }

        /// <summary>Every so often: a fresh processor, loaded by several producers, disposed at a random moment.</summary>
        private async Task ChurnAsync(CancellationToken stop)
        {
            var random = new Random(settings.Seed + 4242);
            while (!stop.IsCancellationRequested)
            {
                long n = Interlocked.Increment(ref _churned);
                var handler = new FaultyHandler(record: false)
                {
                    Plan = FaultyHandler.Random(settings.Seed + (int)n, pThrow: 0.05, pHang: 0.01, pPartial: 0.05, pSlow: 0.2),
                    HangFor = TimeSpan.FromMilliseconds(200),
                    SlowFor = TimeSpan.FromMilliseconds(1),
                };
                lock (_churnHandlers)
                {
                    _churnHandlers.Add(handler);
                    _churnHandlers.RemoveAll(h => h.Running == 0 && h != handler);
                }

                var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
                {
                    Name = $"churn-{n}",
                    MaxBatchSize = 32,
                    QueueCapacity = 256,
                    QueueFullMode = n % 2 == 0 ? QueueFullMode.Wait : QueueFullMode.Reject,
                    MaxConcurrentBatches = 1 + (int)(n % 3),
                    ExecutionTimeout = TimeSpan.FromMilliseconds(50),
                    ShutdownTimeout = TimeSpan.FromMilliseconds(random.Next(0, 100)),
                    OutputCheck = OutputCheck.RejectDefault,
                });
                var producers = Enumerable.Range(0, 4).Select(p => Task.Run(async () =>
                {
                    var mine = new List<Task>(400);
                    for (int i = 0; i < 400; i++)
                    {
                        mine.Add(_churnLedger.Submit(processor, (int)(n % 1000) * 10_000 + p * 1000 + i));
                        if (i % 50 == 0)
                        {
                            await Task.Yield();
                        }
                    }

                    await Task.WhenAll(mine);
                })).ToArray();

                await Task.Delay(random.Next(0, 20));
                await processor.DisposeAsync();
                await Task.WhenAll(producers);
                try
                {
                    await Task.Delay(1000, stop);
                }
                catch (OperationCanceledException)
                {
                }
            }
        }

        private async Task SampleAsync(CancellationToken stop)
        {
            var clock = Stopwatch.StartNew();
            while (true)
            {
                try
                {
                    await Task.Delay(settings.SampleEvery, stop);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                TimeSpan oldest = _lanes.Select(l => l.Ledger).Append(_churnLedger).Max(l => l.OldestPendingAge());
                _maxOldestPending = oldest > _maxOldestPending ? oldest : _maxOldestPending;
                var s = new Sample(clock.Elapsed, AllLedgers().Sum(l => l.Submitted), AllLedgers().Sum(l => (long)l.Pending), oldest,
                    GC.GetTotalMemory(forceFullCollection: true), Process.GetCurrentProcess().Threads.Count, ThreadPool.ThreadCount, GC.CollectionCount(2));
                _samples.Add(s);
                Console.WriteLine($"{Fmt(s.At),7} {s.Submitted,10} {s.Pending,9} {s.OldestPending.TotalMilliseconds,12:F0} ms {Mb(s.HeapBytes),14} {s.Threads,8} {s.PoolThreads,13} {s.Gen2,5}");
            }
        }

        private IEnumerable<Ledger> AllLedgers() => _lanes.Select(l => l.Ledger).Append(_churnLedger);

        private async Task<LedgerReport[]> SettleAllAsync(TimeSpan bound)
        {
            var reports = new List<LedgerReport>();
            var clock = Stopwatch.StartNew();
            foreach (Ledger ledger in AllLedgers())
            {
                reports.Add(await ledger.SettleAsync(bound - clock.Elapsed > TimeSpan.Zero ? bound - clock.Elapsed : TimeSpan.Zero));
            }

            return [.. reports];
        }

        private static async Task<LedgerReport> StillServesAsync(Lane lane)
        {
            foreach (FaultyHandler handler in lane.Handlers)
            {
                handler.Heal();
            }

            // Waves of 20, well inside every queue, so a Reject-mode lane must take every call too.
            var ledger = new Ledger($"{lane.Name} afterwards");
            for (int wave = 0; wave < 25; wave++)
            {
                Task calls = Task.WhenAll(Enumerable.Range(0, 20).Select(i => ledger.Submit(lane.Processor, 2_000_000_000 + wave * 20 + i)));
                if (await Task.WhenAny(calls, Task.Delay(SettleBound)) != calls)
                {
                    break; // a hung call: the books below name it
                }
            }

            return await ledger.SettleAsync(TimeSpan.FromSeconds(10));
        }

        private int Report(TimeSpan loadTime, LedgerReport[] reports, List<LedgerReport> serviceChecks,
            long heapBefore, long heapAfter, long heapDisposed, int threadsBefore, int threadsAfter)
        {
            var failures = new List<string>();
            Console.WriteLine();
            Console.WriteLine($"Accounting (warm-up included), after {Fmt(loadTime)} of load:");
            foreach (LedgerReport r in reports)
            {
                Console.WriteLine($"  {r}");
                if (!r.Clean)
                {
                    failures.Add(r.ThrowIfUncleanMessage());
                }
            }

            long submitted = reports.Sum(r => r.Submitted), succeeded = reports.Sum(r => r.Succeeded), failed = reports.Sum(r => r.Failed);
            long cancelled = reports.Sum(r => r.Cancelled), rejected = reports.Sum(r => r.Rejected), hung = reports.Sum(r => r.Hung);
            long lost = submitted - (succeeded + failed + cancelled + rejected);
            Console.WriteLine($"  TOTAL: submitted {submitted} = succeeded {succeeded} + failed {failed} + cancelled {cancelled} + rejected {rejected}; " +
                $"lost/wrong/unexpected {lost - hung}, hung callers {hung}");
            Console.WriteLine($"  throughput {submitted / loadTime.TotalSeconds:F0} calls/s; churned processors {_churned}; longest pending call seen at a sample {_maxOldestPending.TotalMilliseconds:F0} ms");

            FaultyHandler[] handlers = AllHandlers().ToArray();
            Console.WriteLine($"Faults injected (long-lived handlers): {handlers.Sum(h => h.CallCount)} handler calls, {handlers.Sum(h => h.Throws)} throws, " +
                $"{handlers.Sum(h => h.Hangs)} hangs past the timeout, {handlers.Sum(h => h.Partials)} partial outputs, {handlers.Sum(h => h.Slows)} slow calls, {handlers.Sum(h => h.Poisoned)} poisoned calls");

            Console.WriteLine("Still serving afterwards (faults healed, 500 calls each, in waves of 20):");
            foreach (LedgerReport r in serviceChecks)
            {
                Console.WriteLine($"  {r}");
                if (!r.Clean || r.Succeeded != r.Submitted)
                {
                    failures.Add($"{r.Scenario}: not every call succeeded. {r.ThrowIfUncleanMessage()}");
                }
            }

            double growthMb = (heapAfter - heapBefore) / 1048576.0;
            Console.WriteLine("Memory (managed heap after GC.Collect + GC.GetTotalMemory(true)):");
            Console.WriteLine($"  idle before load {Mb(heapBefore)}, idle after load {Mb(heapAfter)}, growth {growthMb:+0.00;-0.00} MB (limit {settings.MaxGrowthMb} MB); after disposing the processors {Mb(heapDisposed)}");
            if (_samples.Count >= 4)
            {
                // Least-squares slope over the second half of the samples: a leak shows as a steady positive trend.
                Sample[] half = _samples.Skip(_samples.Count / 2).ToArray();
                double slope = Slope(half.Select(s => (s.At.TotalMinutes, s.HeapBytes / 1048576.0)).ToArray());
                Console.WriteLine($"  heap under load: first sample {Mb(_samples[0].HeapBytes)}, last {Mb(_samples[^1].HeapBytes)}, min {Mb(_samples.Min(s => s.HeapBytes))}, max {Mb(_samples.Max(s => s.HeapBytes))}; trend over the second half {slope:+0.000;-0.000} MB/min");
                Console.WriteLine($"  threads under load: min {_samples.Min(s => s.Threads)}, max {_samples.Max(s => s.Threads)}; pool threads max {_samples.Max(s => s.PoolThreads)}");
            }

            Console.WriteLine($"Threads: {threadsBefore} before load, {threadsAfter} after load");
            if (growthMb > settings.MaxGrowthMb)
            {
                failures.Add($"managed heap grew by {growthMb:F2} MB (limit {settings.MaxGrowthMb} MB)");
            }

            Console.WriteLine();
            if (failures.Count == 0)
            {
                Console.WriteLine("RESULT: PASS (no loss, no wrong result, no hung caller, still serving, heap flat)");
                return 0;
            }

            Console.WriteLine("RESULT: FAIL");
            foreach (string failure in failures)
            {
                Console.WriteLine($"  {failure}");
            }

            return 1;
        }

        private static async Task WaitUntil(Func<bool> condition, TimeSpan bound)
        {
            var clock = Stopwatch.StartNew();
            while (!condition() && clock.Elapsed < bound)
            {
                await Task.Delay(10);
            }
        }

        private static long FullGcHeap()
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            return GC.GetTotalMemory(forceFullCollection: true);
        }

        private static double Slope((double X, double Y)[] points)
        {
            double mx = points.Average(p => p.X), my = points.Average(p => p.Y);
            double sxx = points.Sum(p => (p.X - mx) * (p.X - mx));
            return sxx == 0 ? 0 : points.Sum(p => (p.X - mx) * (p.Y - my)) / sxx;
        }

        private static string Mb(long bytes) => $"{bytes / 1048576.0:F2} MB";

        private static string Fmt(TimeSpan t) => t.TotalMinutes >= 1 ? $"{(int)t.TotalMinutes}m{t.Seconds:00}s" : $"{t.TotalSeconds:F1}s";
    }

    internal static class ReportExtensions
    {
        public static string ThrowIfUncleanMessage(this LedgerReport report)
        {
            try
            {
                report.ThrowIfUnclean();
                return report.ToString();
            }
            catch (LedgerException ex)
            {
                return ex.Message;
            }
        }
    }
}
