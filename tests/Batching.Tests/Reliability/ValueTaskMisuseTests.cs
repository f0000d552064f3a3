using System.Collections.Concurrent;
using Batching.Tests.TestSupport;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace Batching.Tests.Reliability;

/// <summary>What one caller does with the ValueTask that ProcessAsync returned.</summary>
public enum Use
{
    /// <summary>Awaits it once.</summary>
    Honest,

    /// <summary>Awaits it, then awaits it again.</summary>
    AwaitTwice,

    /// <summary>Awaits it from two tasks at the same time.</summary>
    AwaitConcurrently,

    /// <summary>Calls GetAwaiter().GetResult() at once (usually while pending), then awaits it.</summary>
    GetResultEarly,

    /// <summary>Awaits it, then calls AsTask() and awaits that.</summary>
    AsTaskAfterAwait,

    /// <summary>Never looks at it.</summary>
    Abandon,
}

/// <summary>A random crowd of callers, some of them misusing their ValueTasks, against one processor.</summary>
public sealed record MisuseWorkload(int MaxBatchSize, int MaxConcurrentBatches, bool InlineWhenIdle, bool AsyncHandler, Use[] Uses)
{
    public override string ToString() =>
        $"MaxBatchSize={MaxBatchSize} MaxConcurrentBatches={MaxConcurrentBatches} InlineWhenIdle={InlineWhenIdle} AsyncHandler={AsyncHandler} " +
        string.Join(" ", Uses.GroupBy(u => u).Select(g => $"{g.Key}={g.Count()}"));
}

public static class MisuseArbitraries
{
    public static Arbitrary<MisuseWorkload> Workloads()
    {
        Gen<Use> use = Gen.Frequency(
            (10, Gen.Constant(Use.Honest)), (2, Gen.Constant(Use.AwaitTwice)), (2, Gen.Constant(Use.AwaitConcurrently)),
            (2, Gen.Constant(Use.GetResultEarly)), (2, Gen.Constant(Use.AsTaskAfterAwait)), (1, Gen.Constant(Use.Abandon)));
        Gen<MisuseWorkload> workload =
            from maxBatch in Gen.Choose(1, 32)
            from slots in Gen.Choose(1, 3)
            from inline in Gen.Elements(false, true)
            from asyncHandler in Gen.Elements(false, true)
            from count in Gen.Choose(1, 300)
            from uses in Gen.ArrayOf(use, count)
            select new MisuseWorkload(maxBatch, slots, inline, asyncHandler, uses);
        return workload.ToArbitrary();
    }
}

/// <summary>
/// Misuse of a returned ValueTask hurts only the misuser: awaiting twice, reading a pending result, AsTask after an
/// await or awaiting from two threads may throw <see cref="InvalidOperationException"/> to that caller, but never gives
/// another caller a wrong output or a foreign exception, never feeds the handler a foreign, default or repeated input,
/// and never crashes the process. Pooled requests are what such misuse would corrupt.
/// </summary>
public class ValueTaskMisuseTests
{
    private static int Expected(int input) => input * 2 + 1;

    [Property(Arbitrary = [typeof(MisuseArbitraries)], MaxTest = 30)]
    public async Task Misused_ValueTasks_hurt_only_their_misusers(MisuseWorkload workload)
    {
        var handler = new CheckingHandler(workload.Uses.Length, workload.AsyncHandler);
        var processor = BatchProcessor.Create<int, int>(handler.HandleAsync, new BatchingOptions
        {
            MaxBatchSize = workload.MaxBatchSize,
            MaxConcurrentBatches = workload.MaxConcurrentBatches,
            InlineWhenIdle = workload.InlineWhenIdle,
        });
        var problems = new ConcurrentQueue<string>();
        int honestResults = 0;

        // Three rounds reuse the pooled requests of the first: corruption would show as wrong results in later rounds.
        for (int round = 0; round < 3; round++)
        {
            int offset = round * workload.Uses.Length;
            Task[] callers = workload.Uses.Select((use, i) => Task.Run(async () =>
            {
                int input = offset + i + 1; // never 0, so a default input in the handler is always a bug
                try
                {
                    if (await CallAsync(processor, input, use) is { } problem)
                    {
                        problems.Enqueue(problem);
                    }
                    else if (use == Use.Honest)
                    {
                        Interlocked.Increment(ref honestResults);
                    }
                }
                catch (Exception ex)
                {
                    problems.Enqueue($"input {input} ({use}): {ex.GetType().Name}: {ex.Message}");
                }
            })).ToArray();
            await Task.WhenAll(callers).WithinBoundAsync();
        }

        await processor.DisposeAsync().AsTask().WithinBoundAsync();
        Assert.True(problems.IsEmpty, $"{workload}: {string.Join("; ", problems.Take(10))}");
        Assert.True(handler.Violation is null, $"{workload}: {handler.Violation}");
        Assert.Equal(3 * workload.Uses.Count(u => u == Use.Honest), honestResults);
    }

    /// <summary>Uses the ValueTask as <paramref name="use"/> says; returns a problem, or null when every result it got was its own.</summary>
    private static async Task<string?> CallAsync(IBatchProcessor<int, int> processor, int input, Use use)
    {
        ValueTask<int> call = processor.ProcessAsync(input);
        string? Check(int result, string how) => result == Expected(input) ? null : $"input {input} ({use}) got {result} from {how}, expected {Expected(input)}";
        switch (use)
        {
            case Use.Honest:
                return Check(await call, "its await");
            case Use.AwaitTwice:
                {
                    string? first = Check(await call, "its first await");
                    try
                    {
                        int again = await call;
                        return first ?? Check(again, "its second await"); // only legal if it is still its own
                    }
                    catch (InvalidOperationException)
                    {
                        return first;
                    }
                }

            case Use.AwaitConcurrently:
                {
                    async Task<string?> AwaitOnce()
                    {
                        try
                        {
                            return Check(await call, "a concurrent await");
                        }
                        catch (InvalidOperationException)
                        {
                            return null;
                        }
                    }

                    string?[] both = await Task.WhenAll(Task.Run(AwaitOnce), Task.Run(AwaitOnce));
                    return both[0] ?? both[1];
                }

            case Use.GetResultEarly:
                {
                    string? early = null;
                    try
                    {
                        early = Check(call.GetAwaiter().GetResult(), "GetResult");
                        return early; // it had completed: consumed, nothing more to await
                    }
                    catch (InvalidOperationException)
                    {
                    }

                    return Check(await call, "the await after an early GetResult");
                }

            case Use.AsTaskAfterAwait:
                {
                    string? first = Check(await call, "its await");
                    try
                    {
                        int late = await call.AsTask();
                        return first ?? Check(late, "AsTask after the await");
                    }
                    catch (InvalidOperationException)
                    {
                        return first;
                    }
                }

            default:
                return null;
        }
    }

    /// <summary>Computes 2x + 1; records any input it sees twice, any input 0 and any input never submitted.</summary>
    private sealed class CheckingHandler(int perRound, bool async)
    {
        private readonly ConcurrentDictionary<int, bool> _seen = new();

        public string? Violation { get; private set; }

        public async ValueTask HandleAsync(ReadOnlyMemory<int> inputs, Memory<int> outputs, CancellationToken token)
        {
            if (async)
            {
                await Task.Yield();
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                int input = inputs.Span[i];
                if (input <= 0 || input > 3 * perRound)
                {
                    Violation ??= $"the handler received input {input}, which no caller submitted";
                }
                else if (!_seen.TryAdd(input, true))
                {
                    Violation ??= $"input {input} reached the handler twice";
                }

                outputs.Span[i] = Expected(input);
            }
        }
    }
}
