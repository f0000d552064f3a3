using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;

namespace Batching.Ilgpu.Internal;

/// <summary>
/// One ILGPU accelerator with its own Context, the kernel loaded once, and <see cref="MaxInFlight"/> slots, each a
/// stream with page-locked staging and device buffers sized for MaxBatchSize, allocated once and reused.
/// </summary>
/// <remarks>
/// ILGPU accelerators and streams are not thread-safe, so everything that touches them (copies, launches) is enqueued
/// under <see cref="_gate"/> after binding the accelerator to the calling thread. Waiting for a stream happens outside
/// the lock, on the slot's own stream, so the copies and kernels of consecutive batches overlap on the device.
/// </remarks>
internal sealed class IlgpuDevice<TIn, TOut, TDevIn, TDevOut> : IExecutionDevice<TIn, TOut>
    where TDevIn : unmanaged
    where TDevOut : unmanaged
{
    private readonly object _gate = new();
    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly KernelProgram<TIn, TOut, TDevIn, TDevOut> _program;
    private readonly LoadedKernel<TDevIn, TDevOut> _kernel;
    private readonly Slot[] _slots;
    private readonly Stack<Slot> _free;
    private readonly int _maxBatchSize;
    private readonly TimeSpan _launchTimeout;
    private bool _released;

    private IlgpuDevice(string name, GpuDeviceKind kind, Context context, Accelerator accelerator, KernelProgram<TIn, TOut, TDevIn, TDevOut> program,
        LoadedKernel<TDevIn, TDevOut> kernel, Slot[] slots, int maxBatchSize, TimeSpan launchTimeout)
    {
        Name = name;
        Kind = kind;
        _context = context;
        _accelerator = accelerator;
        _program = program;
        _kernel = kernel;
        _slots = slots;
        _free = new Stack<Slot>(slots);
        _maxBatchSize = maxBatchSize;
        _launchTimeout = launchTimeout;
    }

    public string Name { get; }

    public GpuDeviceKind Kind { get; }

    public int MaxInFlight => _slots.Length;

    /// <summary>Loads the kernel and allocates every slot on <paramref name="accelerator"/>, then runs one warm-up launch.
    /// Takes ownership of <paramref name="context"/> and <paramref name="accelerator"/>, also when it throws.</summary>
    public static IlgpuDevice<TIn, TOut, TDevIn, TDevOut> Create(string name, GpuDeviceKind kind, Context context, Accelerator accelerator,
        KernelProgram<TIn, TOut, TDevIn, TDevOut> program, int maxBatchSize, int maxInFlight, TimeSpan launchTimeout)
    {
        var owned = new List<IDisposable>();
        try
        {
            accelerator.Bind();
            LoadedKernel<TDevIn, TDevOut> kernel;
            try
            {
                kernel = program.Load(accelerator);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                throw new KernelCompilationException(program.KernelType, $"{name} ({accelerator.AcceleratorType})", ex);
            }

            owned.Add(kernel);
            long inputLength = (long)maxBatchSize * program.InputWidth;
            long outputLength = (long)maxBatchSize * program.OutputWidth;
            var slots = new Slot[maxInFlight];
            for (int i = 0; i < slots.Length; i++)
            {
                slots[i] = new Slot(accelerator, inputLength, outputLength);
                owned.Add(slots[i]);
            }

            var device = new IlgpuDevice<TIn, TOut, TDevIn, TDevOut>(name, kind, context, accelerator, program, kernel, slots, maxBatchSize, launchTimeout);
            device.WarmUp();
            return device;
        }
        catch
        {
            foreach (IDisposable d in owned)
            {
                TryDispose(d);
            }

            TryDispose(accelerator);
            TryDispose(context);
            throw;
        }
    }

    public async ValueTask RunAsync(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken)
    {
        int count = inputs.Length;
        if (count < 1 || count > _maxBatchSize || outputs.Length != count)
        {
            // Buffers are sized for MaxBatchSize: a larger batch must never reach a copy or a launch.
            throw new ArgumentOutOfRangeException(nameof(inputs), count, $"A batch must hold 1 to {_maxBatchSize} items, with as many outputs.");
        }

        cancellationToken.ThrowIfCancellationRequested();
        Slot slot = TakeSlot();
        int inputLength = count * _program.InputWidth;
        int outputLength = count * _program.OutputWidth;
        Task completion;
        try
        {
            _program.Pack(inputs.Span, slot.StagingIn.Span[..inputLength]);
            Enqueue(slot, count, inputLength, outputLength);
            completion = Task.Run(() => Synchronize(slot), CancellationToken.None);
        }
        catch (ArgumentException)
        {
            ReturnSlot(slot);
            throw;
        }

        try
        {
            await completion.WaitAsync(_launchTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // The stream never finished: the slot stays taken, and the router quarantines this device.
            throw new TimeoutException($"A batch of {count} item(s) on {Name} did not complete within GpuOptions.LaunchTimeout ({_launchTimeout}); the device is treated as hung.");
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The device owns the slot's buffers until its stream finishes; the router reuses the slot as soon as this
            // returns, so wait for the stream (microseconds normally) rather than hand back a busy slot.
            try
            {
                await completion.WaitAsync(_launchTimeout).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"A cancelled batch of {count} item(s) on {Name} did not complete within GpuOptions.LaunchTimeout ({_launchTimeout}); the device is treated as hung.");
            }

            ReturnSlot(slot);
            throw;
        }

        _program.Unpack(slot.StagingOut.Span[..outputLength], outputs.Span);
        ReturnSlot(slot);
    }

    private void Enqueue(Slot slot, int count, int inputLength, int outputLength)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_released, this);
            _accelerator.Bind();
            slot.DeviceIn.View.BaseView.SubView(0, inputLength).CopyFrom(slot.Stream, slot.StagingIn.ArrayView.SubView(0, inputLength));
            _kernel.Launch(slot.Stream, count, slot.DeviceIn.View.BaseView, slot.DeviceOut.View.BaseView);
            slot.DeviceOut.View.BaseView.SubView(0, outputLength).CopyTo(slot.Stream, slot.StagingOut.ArrayView.SubView(0, outputLength));
        }
    }

    private void Synchronize(Slot slot)
    {
        _accelerator.Bind();
        slot.Stream.Synchronize();
    }

    private void WarmUp()
    {
        // One launch of one default item, so the first caller pays neither the driver's JIT nor first-launch set-up.
        Slot slot = TakeSlot();
        slot.StagingIn.Span[.._program.InputWidth].Clear();
        Enqueue(slot, 1, _program.InputWidth, _program.OutputWidth);
        if (!Task.Run(() => Synchronize(slot)).Wait(_launchTimeout))
        {
            throw new TimeoutException($"The warm-up launch on {Name} did not complete within GpuOptions.LaunchTimeout ({_launchTimeout}).");
        }

        ReturnSlot(slot);
    }

    private Slot TakeSlot()
    {
        lock (_free)
        {
            // The router admits at most MaxInFlight batches, so a slot is always free here.
            Debug.Assert(_free.Count > 0, "The router admitted more batches than this device has slots.");
            return _free.Count > 0 ? _free.Pop() : throw new InvalidOperationException($"{Name} has no free slot.");
        }
    }

    private void ReturnSlot(Slot slot)
    {
        lock (_free)
        {
            _free.Push(slot);
        }
    }

    public void Release(bool faulted)
    {
        lock (_gate)
        {
            if (_released)
            {
                return;
            }

            _released = true;
        }

        var objects = new List<IDisposable>();
        foreach (Slot slot in _slots)
        {
            objects.AddRange(slot.Objects);
        }

        if (_kernel.Resources is { } resources)
        {
            objects.Add(resources);
        }

        objects.Add(_accelerator);
        objects.Add(_context);
        if (faulted)
        {
            // A faulted CUDA context can make Dispose throw; a finalizer that throws later would end the process.
            foreach (IDisposable d in objects)
            {
                GC.SuppressFinalize(d);
            }
        }

        List<Exception>? errors = null;
        foreach (IDisposable d in objects)
        {
            try
            {
                d.Dispose();
            }
            catch (Exception ex)
            {
                (errors ??= []).Add(ex);
            }
        }

        if (errors is not null)
        {
            throw new AggregateException($"Releasing {Name} failed.", errors);
        }
    }

    private static void TryDispose(IDisposable d)
    {
        GC.SuppressFinalize(d);
        try
        {
            d.Dispose();
        }
        catch (Exception)
        {
            // Creation already failed; its exception is the one that matters.
        }
    }

    private sealed class Slot : IDisposable
    {
        public Slot(Accelerator accelerator, long inputLength, long outputLength)
        {
            Stream = accelerator.CreateStream();
            StagingIn = accelerator.AllocatePageLocked1D<TDevIn>(inputLength);
            StagingOut = accelerator.AllocatePageLocked1D<TDevOut>(outputLength);
            DeviceIn = accelerator.Allocate1D<TDevIn>(inputLength);
            DeviceOut = accelerator.Allocate1D<TDevOut>(outputLength);
        }

        public AcceleratorStream Stream { get; }

        public PageLockedArray1D<TDevIn> StagingIn { get; }

        public PageLockedArray1D<TDevOut> StagingOut { get; }

        public MemoryBuffer1D<TDevIn, Stride1D.Dense> DeviceIn { get; }

        public MemoryBuffer1D<TDevOut, Stride1D.Dense> DeviceOut { get; }

        public IEnumerable<IDisposable> Objects => [DeviceOut, DeviceIn, StagingOut, StagingIn, Stream];

        public void Dispose()
        {
            foreach (IDisposable d in Objects)
            {
                TryDispose(d);
            }
        }
    }
}
