using System.Collections.Concurrent;

namespace Batching.Tests.Reliability;

/// <summary>What a <see cref="FaultyHandler"/> does to one handler call.</summary>
internal enum Fault
{
    /// <summary>Computes every output.</summary>
    None,

    /// <summary>Throws <see cref="InjectedFaultException"/> before writing anything.</summary>
    Throw,

    /// <summary>Waits <see cref="FaultyHandler.HangFor"/> ignoring its token, then computes (too late: its callers timed out).</summary>
    Hang,

    /// <summary>Writes only the outputs at even indices and returns normally.</summary>
    Partial,

    /// <summary>Waits <see cref="FaultyHandler.SlowFor"/> honouring its token, then computes.</summary>
    Slow,
}

/// <summary>Thrown by a <see cref="FaultyHandler"/> on cue; never a bug of the engine.</summary>
internal sealed class InjectedFaultException(string message) : Exception(message);

/// <summary>One call a <see cref="FaultyHandler"/> received.</summary>
/// <param name="Number">1-based call number, in start order.</param>
/// <param name="Inputs">The batch's inputs.</param>
/// <param name="Fault">The fault injected.</param>
/// <param name="Poisoned">Whether a poison input made it throw.</param>
/// <param name="Token">The call's cancellation token.</param>
internal sealed record HandlerCall(long Number, int[] Inputs, Fault Fault, bool Poisoned, CancellationToken Token);

/// <summary>
/// An <c>int -> int</c> batch handler that computes <see cref="Expected"/> and fails on cue: per call through
/// <see cref="Plan"/> (by call number), per input through <see cref="IsPoison"/>. Shared by the reliability tests
/// and the soak, so both exercise the same faults.
/// </summary>
internal sealed class FaultyHandler
{
    private readonly TimeProvider _time;
    private readonly bool _record;
    private long _calls, _items, _throws, _hangs, _partials, _slows, _poisoned, _running, _hangsRunning;

    public FaultyHandler(TimeProvider? time = null, bool record = true)
    {
        _time = time ?? TimeProvider.System;
        _record = record;
    }

    /// <summary>Odd for every input, so never <c>default</c>: <see cref="OutputCheck.RejectDefault"/> detects an unwritten slot.</summary>
    public static int Expected(int input) => unchecked(input * 2 + 1);

    /// <summary>The fault for call number n (1-based).</summary>
    public Func<long, Fault> Plan { get; set; } = _ => Fault.None;

    /// <summary>Inputs that make any call containing them throw <see cref="InjectedFaultException"/>.</summary>
    public Func<int, bool> IsPoison { get; set; } = _ => false;

    public TimeSpan HangFor { get; set; } = TimeSpan.FromHours(1);

    public TimeSpan SlowFor { get; set; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Latency of every call, honouring the token (zero: compute synchronously).</summary>
    public TimeSpan WorkTime { get; set; }

    /// <summary>Released once for every call that starts hanging.</summary>
    public SemaphoreSlim HangStarted { get; } = new(0);

    /// <summary>Released once for every call that starts being slow.</summary>
    public SemaphoreSlim SlowStarted { get; } = new(0);

    /// <summary>Runs at the start of every call with its inputs (tests use it to cancel callers while their batch runs).</summary>
    public Action<ReadOnlyMemory<int>>? OnCall { get; set; }

    public ConcurrentQueue<HandlerCall> Calls { get; } = new();

    public long CallCount => Interlocked.Read(ref _calls);

    public long ItemCount => Interlocked.Read(ref _items);

    public long Throws => Interlocked.Read(ref _throws);

    public long Hangs => Interlocked.Read(ref _hangs);

    public long Partials => Interlocked.Read(ref _partials);

    public long Slows => Interlocked.Read(ref _slows);

    public long Poisoned => Interlocked.Read(ref _poisoned);

    /// <summary>Handler calls running now, hung ones included.</summary>
    public long Running => Interlocked.Read(ref _running);

    /// <summary>Hung handler calls that have not returned yet.</summary>
    public long HangsRunning => Interlocked.Read(ref _hangsRunning);

    public BatchHandler<int, int> Handler => HandleAsync;

    /// <summary>Turns every fault off, so the processor can be checked for correct service afterwards.</summary>
    public void Heal()
    {
        Plan = _ => Fault.None;
        IsPoison = _ => false;
        WorkTime = TimeSpan.Zero;
    }

    public static Func<long, Fault> Every(int k, Fault fault) => n => n % k == 0 ? fault : Fault.None;

    /// <summary>A reproducible, thread-safe random plan: the fault of call n depends only on (seed, n).</summary>
    public static Func<long, Fault> Random(int seed, double pThrow, double pHang, double pPartial, double pSlow) => n =>
    {
        double u = Mix((ulong)seed << 32 ^ (ulong)n) / (double)ulong.MaxValue;
        return u < pThrow ? Fault.Throw
            : u < pThrow + pHang ? Fault.Hang
            : u < pThrow + pHang + pPartial ? Fault.Partial
            : u < pThrow + pHang + pPartial + pSlow ? Fault.Slow
            : Fault.None;
    };

    /// <summary>SplitMix64 finaliser: a cheap, well-spread hash.</summary>
    public static ulong Mix(ulong x)
    {
        x += 0x9E3779B97F4A7C15;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB;
        return x ^ (x >> 31);
    }

    private async ValueTask HandleAsync(ReadOnlyMemory<int> inputs, Memory<int> outputs, CancellationToken token)
    {
        long number = Interlocked.Increment(ref _calls);
        Interlocked.Add(ref _items, inputs.Length);
        Interlocked.Increment(ref _running);
        try
        {
            Fault fault = Plan(number);
            bool poisoned = false;
            foreach (int input in inputs.Span)
            {
                poisoned |= IsPoison(input);
            }

            if (_record)
            {
                Calls.Enqueue(new HandlerCall(number, inputs.ToArray(), fault, poisoned, token));
            }

            OnCall?.Invoke(inputs);
            if (WorkTime > TimeSpan.Zero)
            {
                await Task.Delay(WorkTime, _time, token).ConfigureAwait(false);
            }

            switch (fault)
            {
                case Fault.Throw:
                    Interlocked.Increment(ref _throws);
                    throw new InjectedFaultException($"injected failure of call {number}");
                case Fault.Hang:
                    Interlocked.Increment(ref _hangs);
                    Interlocked.Increment(ref _hangsRunning);
                    try
                    {
                        // Deliberately ignores the token: a handler stuck in native code or a blocking call. The delay
                        // exists before the test hears of it, so a clock advanced at once still ends it.
                        Task hang = Task.Delay(HangFor, _time, CancellationToken.None);
                        HangStarted.Release();
                        await hang.ConfigureAwait(false);
                    }
                    finally
                    {
                        Interlocked.Decrement(ref _hangsRunning);
                    }

                    break;
                case Fault.Slow:
                    Interlocked.Increment(ref _slows);
                    Task slow = Task.Delay(SlowFor, _time, token);
                    SlowStarted.Release();
                    await slow.ConfigureAwait(false);
                    break;
            }

            if (poisoned)
            {
                Interlocked.Increment(ref _poisoned);
                throw new InjectedFaultException($"poison input in call {number}");
            }

            Span<int> output = outputs.Span;
            ReadOnlySpan<int> source = inputs.Span;
            if (fault == Fault.Partial)
            {
                Interlocked.Increment(ref _partials);
            }

            for (int i = 0; i < source.Length; i++)
            {
                if (fault != Fault.Partial || i % 2 == 0)
                {
                    output[i] = Expected(source[i]);
                }
            }
        }
        finally
        {
            Interlocked.Decrement(ref _running);
        }
    }
}

/// <summary>Handlers that call another processor from inside a batch.</summary>
internal static class ForwardingHandler
{
    /// <summary>
    /// Forwards each input to <paramref name="inner"/> (all at once, with the batch's token) and passes its output
    /// through; an input whose inner call failed is left unwritten, so with <see cref="OutputCheck.RejectDefault"/>
    /// only its own caller fails.
    /// </summary>
    public static BatchHandler<int, int> To(IBatchProcessor<int, int> inner) => async (inputs, outputs, token) =>
    {
        var calls = new Task<int>[inputs.Length];
        for (int i = 0; i < calls.Length; i++)
        {
            calls[i] = inner.ProcessAsync(inputs.Span[i], token).AsTask();
        }

        try
        {
            await Task.WhenAll(calls).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Inspected one by one below.
        }

        for (int i = 0; i < calls.Length; i++)
        {
            if (calls[i].IsCompletedSuccessfully)
            {
                outputs.Span[i] = calls[i].Result;
            }
        }
    };
}
