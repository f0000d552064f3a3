using System.Diagnostics;
using System.Threading.Tasks.Sources;

namespace Batching.Benchmarks.Curves;

/// <summary>
/// A device whose batch of n items takes <c>a + b·n</c>, like a GPU: the handler submits the batch and awaits its
/// completion, and no host thread is busy meanwhile. The open-loop driver's spinning thread calls
/// <see cref="TryComplete"/> and completes the batch to within a microsecond of its due time.
/// </summary>
/// <remarks>Holds one batch at a time: the curves run the processor with MaxConcurrentBatches = 1, one device.</remarks>
internal sealed class SimulatedDevice : IValueTaskSource
{
    private readonly long _fixedTicks;
    private readonly double _perItemTicks;
    private ManualResetValueTaskSourceCore<bool> _core;
    private long _due;
    private int _pending;

    public SimulatedDevice(double fixedMicroseconds, double perItemMicroseconds)
    {
        _fixedTicks = (long)(fixedMicroseconds * Stopwatch.Frequency / 1e6);
        _perItemTicks = perItemMicroseconds * Stopwatch.Frequency / 1e6;

        // Completing on the driver's thread must not run the processor's continuation there: it would delay arrivals.
        _core.RunContinuationsAsynchronously = true;
    }

    public long Batches { get; private set; }

    public long Items { get; private set; }

    public long BusyTicks { get; private set; }

    /// <summary>Statistics count only batches submitted at or after this timestamp (the end of warm-up).</summary>
    public long CountFrom { get; set; } = long.MaxValue;

    public long CountUntil { get; set; } = long.MaxValue;

    public ValueTask RunAsync(int items)
    {
        if (Volatile.Read(ref _pending) != 0)
        {
            throw new InvalidOperationException("The simulated device runs one batch at a time.");
        }

        long now = Stopwatch.GetTimestamp();
        long cost = _fixedTicks + (long)(_perItemTicks * items);
        if (now >= CountFrom && now < CountUntil)
        {
            Batches++;
            Items += items;
            BusyTicks += cost;
        }

        _core.Reset();
        _due = now + cost;
        Volatile.Write(ref _pending, 1);
        return new ValueTask(this, _core.Version);
    }

    /// <summary>Completes the running batch if it is due.</summary>
    public void TryComplete(long now)
    {
        if (Volatile.Read(ref _pending) != 0 && now >= _due)
        {
            _pending = 0;
            _core.SetResult(true);
        }
    }

    void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
