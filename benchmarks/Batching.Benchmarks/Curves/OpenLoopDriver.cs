using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Batching.Benchmarks.Curves;

/// <summary>
/// Open-loop load: issues requests at precomputed Poisson arrival times whatever the completions do, so queueing
/// delay shows up in the latencies instead of slowing the load down (a closed loop would hide it). Latency runs
/// from the scheduled arrival, not from when the call was made, so a late driver cannot hide delay either.
/// </summary>
/// <remarks>One dedicated thread spins on the clock: it issues arrivals and completes the simulated device's
/// batches. Completions run on the thread pool and only write a timestamp into a per-request slot.</remarks>
internal sealed class OpenLoopDriver
{
    public const long Rejected = -1;
    public const long Failed = -2;

    private readonly IBatchProcessor<int, int> _processor;
    private readonly SimulatedDevice _device;
    private readonly long[] _schedule;
    private readonly int _count;
    private readonly long[] _completions;
    private readonly ConcurrentQueue<Call> _calls = new();
    private readonly HdrHistogram.LongHistogram _lag = new(1, TimeSpan.FromMinutes(1).Ticks * 100, 3);
    private long _start;
    private int _finished;

    private readonly byte[]? _priorities;

    /// <param name="priorities">Each arrival's priority level, passed in <see cref="RequestOptions"/>; null calls the plain
    /// <c>ProcessAsync(input)</c> (one level).</param>
    public OpenLoopDriver(IBatchProcessor<int, int> processor, SimulatedDevice device, long[] schedule, int count, long[] completions, byte[]? priorities = null)
    {
        _processor = processor;
        _priorities = priorities;
        _device = device;
        _schedule = schedule;
        _count = count;
        _completions = completions;
        Array.Clear(_completions, 0, count);
    }

    public long StartTimestamp => _start;

    /// <summary>How late the driver issued arrivals, in nanoseconds: a health check of the load generator itself.</summary>
    public HdrHistogram.LongHistogram IssueLag => _lag;

    /// <summary>Runs the whole schedule, then waits (driving the device) until every request has completed.</summary>
    public void Run(TimeSpan drainLimit, long countFromOffset, long countUntilOffset)
    {
        var thread = new Thread(() => Drive(drainLimit, countFromOffset, countUntilOffset)) { IsBackground = true, Name = "open-loop driver" };
        thread.Start();
        thread.Join();
    }

    private void Drive(TimeSpan drainLimit, long countFromOffset, long countUntilOffset)
    {
        _start = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 100;
        _device.CountFrom = _start + countFromOffset;
        _device.CountUntil = _start + countUntilOffset;
        long giveUp = _start + (_count > 0 ? _schedule[_count - 1] : 0) + (long)(drainLimit.TotalSeconds * Stopwatch.Frequency);
        double nanosPerTick = 1e9 / Stopwatch.Frequency;
        long yieldThreshold = Stopwatch.Frequency / 200_000; // 5 us
        int next = 0;
        while (true)
        {
            long now = Stopwatch.GetTimestamp();
            _device.TryComplete(now);
            while (next < _count && _start + _schedule[next] <= now)
            {
                _lag.RecordValue(Math.Max(1, (long)((now - _start - _schedule[next]) * nanosPerTick)));
                Issue(next++);
                now = Stopwatch.GetTimestamp();
                _device.TryComplete(now);
            }

            if (next == _count && Volatile.Read(ref _finished) == _count)
            {
                return;
            }

            if (now > giveUp)
            {
                return;
            }

            // Nothing due for a few microseconds: let a pool thread that shares this core run (the processor's
            // dispatcher and the callers' continuations need it on a 2-core machine); sched_yield returns at once if
            // none waits, so arrivals stay on time.
            if (next < _count && _start + _schedule[next] - now > yieldThreshold)
            {
                Thread.Yield();
            }
        }
    }

    private void Issue(int id)
    {
        ValueTask<int> pending = _priorities is null ? _processor.ProcessAsync(Input(id)) : _processor.ProcessAsync(Input(id), new RequestOptions(_priorities[id]));
        if (pending.IsCompleted)
        {
            if (pending.IsCompletedSuccessfully)
            {
                Finish(id, pending.Result);
            }
            else
            {
                // No throw on the driver's thread: a rejection storm at overload must not slow the arrivals down.
                Exception? error = pending.AsTask().Exception?.InnerException;
                FinishWith(id, error is BatchQueueFullException ? Rejected : Failed);
            }

            return;
        }

        if (!_calls.TryDequeue(out Call? call))
        {
            call = new Call(this);
        }

        call.Start(id, pending);
    }

    /// <summary>The input of arrival <paramref name="id"/>: the id itself below 2^24 (a handler can map it back).</summary>
    public static int Input(int id) => id & 0xFFFFFF;

    private void Finish(int id, int output) =>
        FinishWith(id, output == unchecked(Input(id) * 2 + 1) ? Stopwatch.GetTimestamp() : Failed);

    private void FinishWith(int id, long value)
    {
        _completions[id] = value;
        Interlocked.Increment(ref _finished);
    }

    /// <summary>A pooled continuation for one in-flight request: no allocation per request from the driver itself.</summary>
    private sealed class Call
    {
        private readonly OpenLoopDriver _driver;
        private readonly Action _onCompleted;
        private ConfiguredValueTaskAwaitable<int>.ConfiguredValueTaskAwaiter _awaiter;
        private int _id;

        public Call(OpenLoopDriver driver)
        {
            _driver = driver;
            _onCompleted = OnCompleted;
        }

        public void Start(int id, ValueTask<int> pending)
        {
            _id = id;
            _awaiter = pending.ConfigureAwait(false).GetAwaiter();
            _awaiter.UnsafeOnCompleted(_onCompleted);
        }

        private void OnCompleted()
        {
            int id = _id;
            ConfiguredValueTaskAwaitable<int>.ConfiguredValueTaskAwaiter awaiter = _awaiter;
            _awaiter = default;
            try
            {
                _driver.Finish(id, awaiter.GetResult());
            }
            catch (Exception)
            {
                _driver.FinishWith(id, Failed);
            }

            _driver._calls.Enqueue(this);
        }
    }
}
