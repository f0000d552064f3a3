using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Filters;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Perfolizer.Horology;

namespace Batching.Benchmarks.Overhead;

internal static class OverheadConfig
{
    /// <summary>
    /// The full suite: one process per case, few iterations. The timer-bound cases (Deadline, Size and Dataflow at
    /// C = 1 wait MaxDelay per request) take seconds per invocation, so the default job would run for an hour.
    /// </summary>
    public static IConfig Full() => DefaultConfig.Instance
        .AddJob(Job.Default
            .WithLaunchCount(1)
            .WithWarmupCount(2)
            .WithIterationCount(6)
            .WithIterationTime(TimeInterval.FromMilliseconds(250))
            .WithId("Bounded"))
        .AddDiagnoser(MemoryDiagnoser.Default, ThreadingDiagnoser.Default);

    /// <summary>
    /// CI smoke run: in-process, one iteration, and only the cases that finish in milliseconds (C = 256 for every
    /// overhead target, C = 1 for the targets that never wait on a timer; every multi-item case). It proves the suite compiles and runs; its numbers mean nothing.
    /// </summary>
    public static IConfig Quick() => DefaultConfig.Instance
        .AddJob(Job.Dry
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithWarmupCount(1)
            .WithIterationCount(1)
            .WithInvocationCount(4)
            .WithUnrollFactor(1)
            .WithId("Quick"))
        .AddDiagnoser(MemoryDiagnoser.Default)
        .AddFilter(new SimpleFilter(c =>
        {
            if (c.Descriptor.Type != typeof(OverheadBenchmarks))
            {
                return true; // the multi-item cases finish in milliseconds at every C
            }

            int callers = (int)c.Parameters["Callers"];
            string method = c.Descriptor.WorkloadMethod.Name;
            return callers == 256 || (callers == 1 && method is nameof(OverheadBenchmarks.Channel) or nameof(OverheadBenchmarks.Adaptive) or nameof(OverheadBenchmarks.AdaptiveInline) or nameof(OverheadBenchmarks.Direct));
        }))
        .WithOptions(ConfigOptions.DisableLogFile);
}
