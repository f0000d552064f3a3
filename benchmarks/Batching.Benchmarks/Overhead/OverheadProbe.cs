using System.Diagnostics;
using System.Diagnostics.Tracing;

namespace Batching.Benchmarks.Overhead;

/// <summary>
/// A stopwatch run of one overhead scenario, for investigation: throughput, managed bytes allocated per request on
/// all threads, thread-pool work items and lock contentions per request, and (with allocation sampling) which
/// types are allocated, from the runtime's GCAllocationTick events (one per ~100 KB allocated).
/// </summary>
internal static class OverheadProbe
{
    public static RequestTarget Create(string method, int callers) => method switch
    {
        "Channel" => new ChannelTarget(),
        "Dataflow" => new DataflowTarget(),
        "Deadline" => new LibraryTarget(FlushPolicy.Deadline),
        "Size" => new LibraryTarget(FlushPolicy.Size()),
        "Adaptive" => new LibraryTarget(FlushPolicy.Adaptive()),
        "AdaptiveInline" => new LibraryTarget(FlushPolicy.Adaptive(), inlineWhenIdle: true),
        "Direct" => new DirectTarget(callers),
        "Single32" => new SingleCallsTarget(callers, MultiItemBenchmarks.ItemsPerCall),
        "Many32" => new ManyCallTarget(callers, MultiItemBenchmarks.ItemsPerCall),
        "Direct32" => new DirectTarget(callers, MultiItemBenchmarks.ItemsPerCall),
        _ => throw new ArgumentException($"Unknown method '{method}'; use Channel, Dataflow, Deadline, Size, Adaptive, AdaptiveInline, Direct, Single32, Many32 or Direct32.", nameof(method)),
    };

    public static int Run(string method, int callers, TimeSpan duration, bool sampleAllocations)
    {
        using AllocationSampler? sampler = sampleAllocations ? new AllocationSampler() : null;
        RequestTarget target = Create(method, callers);
        string unit = target.ItemsPerCall > 1 ? "item" : "request"; // a multi-item target's callers count items
        var loop = new ClosedLoopCallers(target, callers);
        Thread.Sleep(duration / 4); // warm-up: tiering, pools and queues reach steady state
        sampler?.Reset();
        long requests0 = loop.Completed, bytes0 = GC.GetTotalAllocatedBytes(precise: true);
        long items0 = ThreadPool.CompletedWorkItemCount, locks0 = Monitor.LockContentionCount;
        long batches0 = Volatile.Read(ref NoOpHandler.Batches), batchItems0 = Volatile.Read(ref NoOpHandler.Items);
        int gen0 = GC.CollectionCount(0);
        TimeSpan cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var watch = Stopwatch.StartNew();
        Thread.Sleep(duration);
        watch.Stop();
        TimeSpan cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu0;
        long requests = loop.Completed - requests0;
        long batches = Volatile.Read(ref NoOpHandler.Batches) - batches0, batchItems = Volatile.Read(ref NoOpHandler.Items) - batchItems0;
        double bytes = GC.GetTotalAllocatedBytes(precise: true) - bytes0;
        double items = ThreadPool.CompletedWorkItemCount - items0, locks = Monitor.LockContentionCount - locks0;
        loop.DisposeAsync().AsTask().GetAwaiter().GetResult();
        Console.WriteLine($"{method} C={callers}: {requests / watch.Elapsed.TotalSeconds:N0} {unit}s/s, {watch.Elapsed.TotalMilliseconds * 1e6 / requests:N1} ns/{unit}, {cpu.TotalMilliseconds * 1e6 / requests:N1} CPU ns/{unit}, " +
            $"{bytes / requests:0.00} B/{unit}, {items / requests:0.000} work items/{unit}, {locks / requests:0.0000} lock contentions/{unit}, {GC.CollectionCount(0) - gen0} gen0 GCs, mean batch {(batches == 0 ? 0 : (double)batchItems / batches):0.0}");
        sampler?.Print(bytes);
        return 0;
    }

    private sealed class AllocationSampler : EventListener
    {
        private readonly Dictionary<string, long> _bytesByType = [];

        public void Reset()
        {
            lock (_bytesByType)
            {
                _bytesByType.Clear();
            }
        }

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == "Microsoft-Windows-DotNETRuntime")
            {
                EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1); // GC keyword: AllocationTick is verbose
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs e)
        {
            if (e.EventName is null || !e.EventName.StartsWith("GCAllocationTick", StringComparison.Ordinal) || e.PayloadNames is null)
            {
                return;
            }

            string type = e.Payload![e.PayloadNames.IndexOf("TypeName")] as string ?? "?";
            int amountIndex = e.PayloadNames.IndexOf("AllocationAmount64");
            long amount = amountIndex >= 0 ? Convert.ToInt64(e.Payload[amountIndex]) : 100_000;
            lock (_bytesByType)
            {
                _bytesByType[type] = _bytesByType.GetValueOrDefault(type) + amount;
            }
        }

        public void Print(double totalBytes)
        {
            lock (_bytesByType)
            {
                Console.WriteLine($"  allocation samples (GCAllocationTick; sampled bytes by type, total measured {totalBytes:N0} B):");
                foreach (var (type, bytes) in _bytesByType.OrderByDescending(kv => kv.Value).Take(12))
                {
                    Console.WriteLine($"    {bytes,14:N0} B  {type}");
                }
            }
        }
    }
}
