using System.Diagnostics;

namespace Batching.Benchmarks.Overhead;

/// <summary>One way of serving a request: the library, a baseline batcher, or a direct call.</summary>
internal abstract class RequestTarget : IAsyncDisposable
{
    /// <summary>Serves one call for caller <paramref name="caller"/>: <see cref="ItemsPerCall"/> items, the first of
    /// them <paramref name="input"/>, whose output it returns (a multi-item target checks the others itself).</summary>
    public abstract ValueTask<int> CallAsync(int caller, int input);

    /// <summary>Items one call carries; the callers count items, so every rate and per-request figure is per item.</summary>
    public virtual int ItemsPerCall => 1;

    public virtual ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>
/// C callers that each await <see cref="RequestTarget.CallAsync"/> in a loop, started once per benchmark case
/// and kept running across BenchmarkDotNet invocations.
/// </summary>
/// <remarks>
/// An invocation waits until the callers have completed a given number of requests (items, for a multi-item target). Keeping the callers alive
/// (rather than starting C tasks per invocation) measures the steady state: no ramp-up at the start of each
/// invocation, and no per-invocation task or state-machine allocations that would be charged to the target.
/// </remarks>
internal sealed class ClosedLoopCallers : IAsyncDisposable
{
    private readonly RequestTarget _target;
    private readonly Task[] _callers;
    private readonly ManualResetEventSlim _goalReached = new(false);
    private long _completed;
    private long _goal = long.MaxValue;
    private long _returnedAt;
    private volatile bool _stopping;

    public ClosedLoopCallers(RequestTarget target, int callers)
    {
        _target = target;
        _callers = new Task[callers];
        for (int i = 0; i < callers; i++)
        {
            int caller = i;
            _callers[i] = Task.Run(() => CallLoopAsync(caller));
        }
    }

    public long Completed => Volatile.Read(ref _completed);

    /// <summary>Blocks until the callers have completed <paramref name="requests"/> more requests.</summary>
    /// <remarks>
    /// Back-to-back calls (BenchmarkDotNet's timed loop) chain their goals: the requests completed while this thread
    /// wakes up count toward the next call, whose time includes that wake-up, so a timed loop measures exactly its
    /// requests. After a pause (BenchmarkDotNet's untimed bookkeeping between iterations) the count starts afresh.
    /// </remarks>
    public void Run(int requests)
    {
        long now = Stopwatch.GetTimestamp();
        long previous = Volatile.Read(ref _goal);
        bool backToBack = previous != long.MaxValue && now - _returnedAt < Stopwatch.Frequency / 20_000; // 50 us
        long goal = backToBack ? previous + requests : Volatile.Read(ref _completed) + requests;

        // Exchange, not a plain write: it is a full fence, so the count read below cannot be older than the goal
        // a caller sees (otherwise both could miss the moment the goal is reached).
        Interlocked.Exchange(ref _goal, goal);
        while (true)
        {
            // Reset before the check, so a set for an earlier goal cannot end this wait early.
            _goalReached.Reset();
            if (Volatile.Read(ref _completed) >= goal)
            {
                _returnedAt = Stopwatch.GetTimestamp();
                return;
            }

            _goalReached.Wait();
        }
    }

    private async Task CallLoopAsync(int caller)
    {
        int input = caller << 20;
        int items = _target.ItemsPerCall;
        int synchronous = 0;
        while (!_stopping)
        {
            ValueTask<int> pending = _target.CallAsync(caller, input);
            if (pending.IsCompleted && ++synchronous % 1024 == 0)
            {
                // A target that completes synchronously (the direct call) would otherwise never give up its thread.
                await Task.Yield();
            }

            int output = await pending.ConfigureAwait(false);
            if (output != unchecked(input * 2 + 1))
            {
                Environment.FailFast($"Caller {caller} got {output} for input {input}: a result reached the wrong caller.");
            }

            input = (caller << 20) | ((input + 1) & 0xFFFFF);
            long completed = Interlocked.Add(ref _completed, items);
            long goal = Volatile.Read(ref _goal);
            if (completed >= goal && completed - items < goal)
            {
                _goalReached.Set();
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stopping = true;
        Task all = Task.WhenAll(_callers);
        if (await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(30))).ConfigureAwait(false) != all)
        {
            // Timer-driven targets finish their last requests within MaxDelay; 30 s means something hung.
            throw new TimeoutException("Benchmark callers did not stop within 30 s.");
        }

        await _target.DisposeAsync().ConfigureAwait(false);
        _goalReached.Dispose();
        Debug.Assert(all.IsCompletedSuccessfully);
    }
}
