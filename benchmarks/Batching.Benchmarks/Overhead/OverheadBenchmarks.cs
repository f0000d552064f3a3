using BenchmarkDotNet.Attributes;

namespace Batching.Benchmarks.Overhead;

/// <summary>
/// Cost per request of coalescing concurrent calls: C callers each await one request at a time in a loop, a no-op
/// handler, MaxBatchSize 100. Mean and Allocated are per request (OperationsPerInvoke); Ratio and Alloc Ratio are
/// against the hand-written Channel batcher at the same C.
/// </summary>
public class OverheadBenchmarks
{
    internal const int MaxBatchSize = 100;

    /// <summary>Requests per invocation. Small enough that the timer-bound cases (a fixed MaxDelay wait per request
    /// at C = 1) stay within seconds per invocation; the callers run continuously, so there is no ramp-up to amortize.</summary>
    public const int Requests = 1_000;

    private ClosedLoopCallers? _callers;

    [Params(1, 16, 256)]
    public int Callers { get; set; }

    [GlobalSetup(Target = nameof(Channel))]
    public void SetupChannel() => Start(new ChannelTarget());

    [GlobalSetup(Target = nameof(Dataflow))]
    public void SetupDataflow() => Start(new DataflowTarget());

    [GlobalSetup(Target = nameof(Deadline))]
    public void SetupDeadline() => Start(new LibraryTarget(FlushPolicy.Deadline));

    [GlobalSetup(Target = nameof(Size))]
    public void SetupSize() => Start(new LibraryTarget(FlushPolicy.Size()));

    [GlobalSetup(Target = nameof(Adaptive))]
    public void SetupAdaptive() => Start(new LibraryTarget(FlushPolicy.Adaptive()));

    [GlobalSetup(Target = nameof(AdaptiveInline))]
    public void SetupAdaptiveInline() => Start(new LibraryTarget(FlushPolicy.Adaptive(), inlineWhenIdle: true));

    [GlobalSetup(Target = nameof(Direct))]
    public void SetupDirect() => Start(new DirectTarget(Callers));

    [GlobalCleanup]
    public void Cleanup()
    {
        _callers?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _callers = null;
    }

    /// <summary>Hand-written bounded Channel of (input, TaskCompletionSource) with one consumer loop.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Requests)]
    public void Channel() => _callers!.Run(Requests);

    /// <summary>TPL Dataflow BatchBlock + ActionBlock, with a 1 ms timer calling TriggerBatch.</summary>
    [Benchmark(OperationsPerInvoke = Requests)]
    public void Dataflow() => _callers!.Run(Requests);

    /// <summary>This library, FlushPolicy.Deadline (the default; MaxDelay 1 ms).</summary>
    [Benchmark(OperationsPerInvoke = Requests)]
    public void Deadline() => _callers!.Run(Requests);

    /// <summary>This library, FlushPolicy.Size() (waits for a full batch or MaxDelay 1 ms).</summary>
    [Benchmark(OperationsPerInvoke = Requests)]
    public void Size() => _callers!.Run(Requests);

    /// <summary>This library, FlushPolicy.Adaptive().</summary>
    [Benchmark(OperationsPerInvoke = Requests)]
    public void Adaptive() => _callers!.Run(Requests);

    /// <summary>This library, FlushPolicy.Adaptive() with BatchingOptions.InlineWhenIdle: at idle the caller runs the batch itself.</summary>
    [Benchmark(OperationsPerInvoke = Requests)]
    public void AdaptiveInline() => _callers!.Run(Requests);

    /// <summary>The handler called directly, one request per call: the floor for the added-latency target at C = 1.</summary>
    [Benchmark(OperationsPerInvoke = Requests)]
    public void Direct() => _callers!.Run(Requests);

    private void Start(RequestTarget target)
    {
        _callers = new ClosedLoopCallers(target, Callers);

        // Let every caller make its first round trip before BenchmarkDotNet starts timing anything.
        _callers.Run(Callers * 4);
    }
}
