using System.Collections.Concurrent;

namespace Batching.Tests.TestSupport;

/// <summary>A handler that records every call, computes <c>x * 2 + 1</c>, and can block, fail or check concurrency on cue.</summary>
internal sealed class RecordingHandler
{
    private readonly TimeProvider _time;
    private int _running;
    private int _maxRunning;

    public RecordingHandler(TimeProvider? time = null) => _time = time ?? TimeProvider.System;

    public ConcurrentQueue<BatchCall> Calls { get; } = new();

    /// <summary>When set, every call waits for this task before computing.</summary>
    public Task? Gate { get; set; }

    /// <summary>Makes every call from now on wait; <see cref="Release"/> lets them all go.</summary>
    public TaskCompletionSource Hold()
    {
        var gate = new TaskCompletionSource();
        Gate = gate.Task;
        return gate;
    }

    /// <summary>Ends a <see cref="Hold"/>: the waiting calls go on, later ones no longer wait.</summary>
    public void Release(TaskCompletionSource gate)
    {
        Gate = null;
        gate.SetResult();
    }

    /// <summary>Inputs that make the whole call throw.</summary>
    public Func<int, bool> IsPoison { get; set; } = _ => false;

    /// <summary>Signalled each time a call starts.</summary>
    public SemaphoreSlim Started { get; } = new(0);

    public int MaxConcurrentCalls => Volatile.Read(ref _maxRunning);

    public int[] AllInputs => Calls.SelectMany(c => c.Inputs).ToArray();

    public static int Expected(int input) => input * 2 + 1;

    public BatchHandler<int, int> Handler => HandleAsync;

    private async ValueTask HandleAsync(ReadOnlyMemory<int> inputs, Memory<int> outputs, CancellationToken token)
    {
        int running = Interlocked.Increment(ref _running);
        InterlockedMax(ref _maxRunning, running);
        try
        {
            var call = new BatchCall(inputs.ToArray(), _time.GetUtcNow(), token);
            Calls.Enqueue(call);
            Started.Release();
            if (Gate is { } gate)
            {
                await gate.WaitAsync(token).ConfigureAwait(false);
            }

            foreach (int input in call.Inputs)
            {
                if (IsPoison(input))
                {
                    throw new InvalidOperationException($"poison input {input}");
                }
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = Expected(inputs.Span[i]);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _running);
        }
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int current;
        while (value > (current = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, current) != current)
        {
        }
    }
}

internal sealed record BatchCall(int[] Inputs, DateTimeOffset StartedAt, CancellationToken Token);
