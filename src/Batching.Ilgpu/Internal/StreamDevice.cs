using System.Diagnostics;
using System.Threading.Tasks.Sources;
using Batching.Internal;

namespace Batching.Ilgpu.Internal;

/// <summary>
/// One accelerator (or one instance on it) with <see cref="MaxInFlight"/> slots, each a stream with page-locked staging
/// and device buffers sized for MaxBatchSize, allocated once and reused, and one completion thread.
/// </summary>
/// <remarks>
/// <para>A batch is packed into a free slot's staging buffer on the caller's thread, then its copies and kernel are
/// queued on the slot's stream under <see cref="_gate"/> (ILGPU accelerators and streams are not thread-safe) and the
/// slot joins <see cref="_launched"/>. The completion thread waits for the launched slots in launch order, unpacks
/// each finished batch and completes the slot's own <see cref="IValueTaskSource"/>: no task, no pool thread and no
/// spinning per batch, and the copies and kernels of consecutive batches still overlap on the device. (With CUDA the
/// context is created with blocking synchronization, so that wait sleeps instead of spinning.)</para>
/// <para>A hung launch blocks the completion thread for good, so a watchdog timer fails every launched slot once the
/// oldest has run past LaunchTimeout; the router then quarantines the device and re-runs those batches elsewhere.
/// A timed-out slot is never reused, and a hung device is never released (its memory may still be in use).</para>
/// </remarks>
internal sealed class StreamDevice<TIn, TOut, TDevIn, TDevOut> : IExecutionDevice<TIn, TOut>
    where TDevIn : unmanaged
    where TDevOut : unmanaged
{
    private readonly object _gate = new();
    private readonly IDeviceBackend<TDevIn, TDevOut> _backend;
    private readonly KernelProgram<TIn, TOut, TDevIn, TDevOut> _program;
    private readonly Slot[] _slots;
    private readonly Stack<Slot> _free; // guarded by _gate
    private readonly Queue<Slot> _launched = new(); // guarded by _gate; in launch order
    private readonly int _maxBatchSize;
    private readonly TimeSpan _launchTimeout;
    private readonly Thread _completer;
    private readonly ITimer? _watchdog;
    private DeviceState _state; // guarded by _gate

    private StreamDevice(string name, GpuDeviceKind kind, IDeviceBackend<TDevIn, TDevOut> backend, KernelProgram<TIn, TOut, TDevIn, TDevOut> program,
        IDeviceStream<TDevIn, TDevOut>[] streams, int maxBatchSize, TimeSpan launchTimeout)
    {
        Name = name;
        Kind = kind;
        _backend = backend;
        _program = program;
        _slots = [.. streams.Select(s => new Slot(this, s))];
        _free = new Stack<Slot>(_slots);
        _maxBatchSize = maxBatchSize;
        _launchTimeout = launchTimeout;
        _completer = new Thread(Complete) { IsBackground = true, Name = $"Batching.Ilgpu completion ({name})" };
        if (launchTimeout != Timeout.InfiniteTimeSpan)
        {
            TimeSpan period = TimeSpan.FromTicks(Math.Clamp(launchTimeout.Ticks / 4, TimeSpan.TicksPerMillisecond, TimeSpan.TicksPerSecond));
            _watchdog = TimeProvider.System.CreateTimer(static state => ((StreamDevice<TIn, TOut, TDevIn, TDevOut>)state!).CheckHung(), this, period, period);
        }
    }

    private enum DeviceState
    {
        Running,
        Released,
    }

    public string Name { get; }

    public GpuDeviceKind Kind { get; }

    public int MaxInFlight => _slots.Length;

    /// <summary>Allocates every slot on <paramref name="backend"/>, starts the completion thread, then runs one warm-up
    /// launch. Takes ownership of <paramref name="backend"/>, also when it throws.</summary>
    public static StreamDevice<TIn, TOut, TDevIn, TDevOut> Create(string name, GpuDeviceKind kind, IDeviceBackend<TDevIn, TDevOut> backend,
        KernelProgram<TIn, TOut, TDevIn, TDevOut> program, int maxBatchSize, int maxInFlight, TimeSpan launchTimeout)
    {
        var streams = new List<IDeviceStream<TDevIn, TDevOut>>();
        StreamDevice<TIn, TOut, TDevIn, TDevOut>? device = null;
        try
        {
            backend.Bind();
            long inputLength = (long)maxBatchSize * program.InputWidth;
            long outputLength = (long)maxBatchSize * program.OutputWidth;
            for (int i = 0; i < maxInFlight; i++)
            {
                streams.Add(backend.CreateStream(inputLength, outputLength));
            }

            device = new StreamDevice<TIn, TOut, TDevIn, TDevOut>(name, kind, backend, program, [.. streams], maxBatchSize, launchTimeout);
            device._completer.Start();
            device.WarmUp();
            return device;
        }
        catch (TimeoutException) when (device is not null)
        {
            // The warm-up hung: its stream may still be in use, so nothing is freed; only the finalizers are stopped.
            device.Abandon();
            throw;
        }
        catch
        {
            if (device is not null)
            {
                device.Stop();
            }

            foreach (IDeviceStream<TDevIn, TDevOut> stream in streams)
            {
                stream.SuppressFinalizers();
                Disposal.Dispose(stream, suppressFinalizer: true);
            }

            backend.SuppressFinalizers();
            Disposal.Dispose(backend, suppressFinalizer: true);
            throw;
        }
    }

    public ValueTask RunAsync(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken)
    {
        int count = inputs.Length;
        if (count < 1 || count > _maxBatchSize || outputs.Length != count)
        {
            // Buffers are sized for MaxBatchSize: a larger batch must never reach a copy or a launch.
            throw new ArgumentOutOfRangeException(nameof(inputs), count, $"A batch must hold 1 to {_maxBatchSize} items, with as many outputs.");
        }

        // Once launched, a batch runs to the end (microseconds); cancellation only keeps it from starting.
        cancellationToken.ThrowIfCancellationRequested();
        Slot slot = TakeSlot();
        int inputLength = count * _program.InputWidth;
        try
        {
            _program.Pack(inputs.Span, slot.Stream.StagingIn[..inputLength], outputs.Span);
        }
        catch
        {
            ReturnSlot(slot);
            throw;
        }

        return Launch(slot, inputs, outputs, count, inputLength, count * _program.OutputWidth);
    }

    private ValueTask Launch(Slot slot, ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, int count, int inputLength, int outputLength)
    {
        short token = slot.Arm(inputs, outputs, outputLength);
        lock (_gate)
        {
            if (_state != DeviceState.Running)
            {
                slot.Disarm();
                _free.Push(slot);
                throw new ObjectDisposedException(Name);
            }

            try
            {
                _backend.Bind();
                slot.Stream.Enqueue(count, inputLength, outputLength);
            }
            catch (ArgumentException ex)
            {
                // ILGPU checks launch shapes and views on the host, before anything reaches the device: the device is
                // fine, but this batch cannot be launched on it. Never the callers' bad input.
                slot.Disarm();
                _free.Push(slot);
                throw new LaunchConfigurationException($"A batch of {count} item(s) could not be launched on {Name}: {ex.Message}", ex);
            }

            slot.LaunchedAt = Stopwatch.GetTimestamp();
            _launched.Enqueue(slot);
            if (_launched.Count == 1)
            {
                Monitor.Pulse(_gate);
            }
        }

        return new ValueTask(slot, token);
    }

    private void WarmUp()
    {
        // One launch of one default item, so the first caller pays neither the driver's JIT nor first-launch set-up.
        Slot slot = TakeSlot();
        slot.Stream.StagingIn[.._program.InputWidth].Clear();
        slot.CompleteInline = true;
        Task done = Launch(slot, ReadOnlyMemory<TIn>.Empty, Memory<TOut>.Empty, 1, _program.InputWidth, 0).AsTask();
        if (!done.Wait(_launchTimeout))
        {
            throw new TimeoutException($"The warm-up launch on {Name} did not complete within GpuOptions.LaunchTimeout ({_launchTimeout}).");
        }

        slot.CompleteInline = false;
        done.GetAwaiter().GetResult();
    }

    /// <summary>The completion thread: waits for launched slots in launch order and completes them.</summary>
    private void Complete()
    {
        Exception? bindError = null;
        try
        {
            _backend.Bind();
        }
        catch (Exception ex)
        {
            bindError = ex;
        }

        while (true)
        {
            Slot slot;
            lock (_gate)
            {
                while (_launched.Count == 0)
                {
                    if (_state != DeviceState.Running)
                    {
                        return;
                    }

                    Monitor.Wait(_gate);
                }

                // Stays queued while it runs, so the watchdog can see how long it has been running.
                slot = _launched.Peek();
            }

            Exception? error = bindError;
            if (error is null)
            {
                try
                {
                    slot.Stream.Synchronize();
                }
                catch (Exception ex)
                {
                    error = ex;
                }
            }

            lock (_gate)
            {
                _launched.Dequeue();
            }

            if (!slot.TryClaim())
            {
                continue; // the watchdog failed it already
            }

            if (error is null)
            {
                try
                {
                    _program.Unpack(slot.Stream.StagingOut[..slot.OutputLength], slot.Inputs.Span, slot.Outputs.Span);
                }
                catch (Exception ex)
                {
                    error = new LaunchConfigurationException($"The results of a batch on {Name} could not be handed out: {ex.Message}", ex);
                }
            }

            slot.Finish(error);
        }
    }

    private void CheckHung()
    {
        (Slot Slot, long LaunchedAt)[] expired;
        lock (_gate)
        {
            if (_launched.Count == 0 || Stopwatch.GetElapsedTime(_launched.Peek().LaunchedAt) < _launchTimeout)
            {
                return;
            }

            // The oldest launch is overdue, and the completion thread is blocked on it: everything behind it waits too.
            // Each with its launch stamp, so a slot that completed and was launched again meanwhile is left alone.
            expired = [.. _launched.Select(s => (s, s.LaunchedAt))];
        }

        foreach ((Slot slot, long launchedAt) in expired)
        {
            if (slot.TryTimeOut(launchedAt))
            {
                slot.Finish(new TimeoutException(
                    $"A batch on {Name} did not complete within GpuOptions.LaunchTimeout ({_launchTimeout}); the device is treated as hung."));
            }
        }
    }

    private Slot TakeSlot()
    {
        lock (_gate)
        {
            // Once released, no slot's staging may be written: refuse before packing, not after.
            ObjectDisposedException.ThrowIf(_state != DeviceState.Running, this);

            // The router admits at most MaxInFlight batches, so a slot is always free here.
            Debug.Assert(_free.Count > 0, "The router admitted more batches than this device has slots.");
            return _free.Count > 0 ? _free.Pop() : throw new InvalidOperationException($"{Name} has no free slot.");
        }
    }

    private void ReturnSlot(Slot slot)
    {
        lock (_gate)
        {
            _free.Push(slot);
        }
    }

    /// <summary>Stops taking batches and lets the completion thread leave once nothing is launched.</summary>
    private void Shut()
    {
        lock (_gate)
        {
            _state = DeviceState.Released;
            Monitor.PulseAll(_gate);
        }

        _watchdog?.Dispose();
    }

    /// <summary>Shuts the device; false when the completion thread is still blocked on it after a while.</summary>
    private bool Stop()
    {
        Shut();
        return !_completer.IsAlive || _completer.Join(TimeSpan.FromSeconds(5));
    }

    /// <summary>For a device whose memory may still be in use: nothing is freed, and no finalizer runs later.</summary>
    private void Abandon()
    {
        Shut();
        SuppressFinalizers();
    }

    private void SuppressFinalizers()
    {
        foreach (Slot slot in _slots)
        {
            slot.Stream.SuppressFinalizers();
        }

        _backend.SuppressFinalizers();
    }

    public void Release(bool faulted)
    {
        Slot[] idle;
        bool launched;
        lock (_gate)
        {
            if (_state == DeviceState.Released)
            {
                return;
            }

            // Only the slots in the free list are freed: one a batch still holds (between taking it and launching) is
            // left to the finalizers rather than freed under it.
            launched = _launched.Count > 0;

            // A slot the watchdog timed out whose launch has since finished (it left the launched queue) is idle too.
            idle = [.. _slots.Where(slot => _free.Contains(slot) || (slot.IsTimedOut && !_launched.Contains(slot)))];
        }

        if (launched || !Stop())
        {
            // A launch is still running (hung): freeing its memory could crash the process, and waiting for the
            // completion thread would block the caller (a DisposeAsync) for as long as the launch hangs.
            Abandon();
            throw new TimeoutException($"{Name} still has a launch running; its resources are abandoned.");
        }

        if (faulted)
        {
            // A faulted CUDA context can make Dispose throw; a finalizer that throws later would end the process.
            SuppressFinalizers();
        }

        List<Exception>? errors = null;
        foreach (Slot slot in idle)
        {
            Disposal.Run(slot.Stream.Dispose, ref errors);
        }

        Disposal.Run(_backend.Dispose, ref errors);
        Disposal.ThrowIfAny(errors, $"Releasing {Name} failed.");
    }

    /// <summary>One stream with its buffers, and the completion of the batch running on it.</summary>
    /// <remarks>Phase: Idle → Armed (launched) → Claimed (the completion thread finishes it) → Idle again once the router
    /// has consumed the result; or Armed → TimedOut (the watchdog finished it), after which the slot is never used again.
    /// The completion is a consume-once source: completing and consuming are each one atomic step, so the slot cannot be
    /// re-armed for the next batch while the completing thread is still publishing this one's result.</remarks>
    private sealed class Slot(StreamDevice<TIn, TOut, TDevIn, TDevOut> owner, IDeviceStream<TDevIn, TDevOut> stream)
        : ConsumeOnceValueTaskSource<bool>, IValueTaskSource
    {
        private const int Idle = 0;
        private const int Armed = 1;
        private const int Claimed = 2;
        private const int TimedOut = 3;
        private int _phase;

        public IDeviceStream<TDevIn, TDevOut> Stream { get; } = stream;

        public ReadOnlyMemory<TIn> Inputs { get; private set; }

        public Memory<TOut> Outputs { get; private set; }

        public int OutputLength { get; private set; }

        public long LaunchedAt { get; set; }

        public short Arm(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, int outputLength)
        {
            Inputs = inputs;
            Outputs = outputs;
            OutputLength = outputLength;
            LaunchedAt = 0; // a watchdog holding the previous launch's stamp must not match this one
            Reset();
            Volatile.Write(ref _phase, Armed);
            return Token;
        }

        public void Disarm()
        {
            Inputs = default;
            Outputs = default;
            Volatile.Write(ref _phase, Idle);
        }

        public bool TryClaim() => Interlocked.CompareExchange(ref _phase, Claimed, Armed) == Armed;

        public bool IsTimedOut => Volatile.Read(ref _phase) == TimedOut;

        /// <summary>Times out this launch if it is still the one launched at <paramref name="launchedAt"/>.</summary>
        public bool TryTimeOut(long launchedAt) => LaunchedAt == launchedAt && Interlocked.CompareExchange(ref _phase, TimedOut, Armed) == Armed;

        /// <summary>True only for the warm-up launch, whose waiter is start-up itself: completing it inline keeps start-up
        /// from depending on a free pool thread.</summary>
        public bool CompleteInline { get; set; }

        // On the pool: the router and the engine must never run on the completion thread.
        public void Finish(Exception? error) => Complete(true, error, inline: CompleteInline);

        void IValueTaskSource.GetResult(short token) => GetResult(token);

        protected override void OnConsumed()
        {
            // Back to the free list before the router counts the batch as done, so the next batch finds a slot.
            if (Interlocked.CompareExchange(ref _phase, Idle, Claimed) == Claimed)
            {
                Inputs = default;
                Outputs = default;
                owner.ReturnSlot(this);
            }
        }
    }
}

/// <summary>A batch could not be launched on a device for reasons of its own shape (grid or view limits), not because
/// the device faulted or an item was bad: the router runs it on the next path and keeps the device in rotation.</summary>
internal sealed class LaunchConfigurationException(string message, Exception innerException) : Exception(message, innerException);
