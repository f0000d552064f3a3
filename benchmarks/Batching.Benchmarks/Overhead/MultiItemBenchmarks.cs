using BenchmarkDotNet.Attributes;

namespace Batching.Benchmarks.Overhead;

/// <summary>
/// Cost per item of a multi-item call (issue 10): C callers each make calls of 32 items in a loop over the no-op
/// handler, MaxBatchSize 100, default options otherwise. <c>Single32</c> issues 32 concurrent <c>ProcessAsync</c> calls
/// and awaits them all, <c>Many32</c> makes one <c>ProcessManyAsync</c> call of 32 items, <c>Direct32</c> calls the
/// handler directly with the 32 items (the floor). Mean and Allocated are per item (OperationsPerInvoke); engine
/// overhead per item = Mean - Direct32's Mean at the same C.
/// </summary>
public class MultiItemBenchmarks
{
    public const int ItemsPerCall = 32;

    /// <summary>Items per invocation: 64 calls of 32.</summary>
    public const int Items = 64 * ItemsPerCall;

    private ClosedLoopCallers? _callers;

    /// <summary>1: one caller's 32 items at a time. 8: 256 items in flight, as many as the overhead suite's C = 256.</summary>
    [Params(1, 8)]
    public int Callers { get; set; }

    [GlobalSetup(Target = nameof(Single32))]
    public void SetupSingle32() => Start(new SingleCallsTarget(Callers, ItemsPerCall));

    [GlobalSetup(Target = nameof(Many32))]
    public void SetupMany32() => Start(new ManyCallTarget(Callers, ItemsPerCall));

    [GlobalSetup(Target = nameof(Direct32))]
    public void SetupDirect32() => Start(new DirectTarget(Callers, ItemsPerCall));

    [GlobalCleanup]
    public void Cleanup()
    {
        _callers?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _callers = null;
    }

    /// <summary>32 concurrent ProcessAsync calls, all awaited.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public void Single32() => _callers!.Run(Items);

    /// <summary>One ProcessManyAsync call of 32 items.</summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public void Many32() => _callers!.Run(Items);

    /// <summary>The handler called directly with the 32 items: the floor that engine overhead is measured above.</summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public void Direct32() => _callers!.Run(Items);

    private void Start(RequestTarget target)
    {
        _callers = new ClosedLoopCallers(target, Callers);

        // Let every caller make its first round trips before BenchmarkDotNet starts timing anything.
        _callers.Run(Callers * ItemsPerCall * 4);
    }
}
