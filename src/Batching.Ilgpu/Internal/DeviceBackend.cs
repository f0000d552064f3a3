using ILGPU;
using ILGPU.Runtime;

namespace Batching.Ilgpu.Internal;

/// <summary>What a <see cref="StreamDevice{TIn, TOut, TDevIn, TDevOut}"/> needs from the hardware: a thread binding,
/// streams with their buffers, and what to free at the end. <see cref="IlgpuBackend{TDevIn, TDevOut}"/> is the real
/// one; tests and the host-cost benchmark use fakes that take no device time or hang on cue.</summary>
internal interface IDeviceBackend<TDevIn, TDevOut> : IDisposable
    where TDevIn : unmanaged
    where TDevOut : unmanaged
{
    /// <summary>Makes the accelerator current on the calling thread (ILGPU and CUDA contexts are per thread).</summary>
    void Bind();

    /// <summary>A stream with page-locked staging and device buffers of the given lengths.</summary>
    IDeviceStream<TDevIn, TDevOut> CreateStream(long inputLength, long outputLength);

    /// <summary>Keeps finalizers of the backend's objects from running: a faulted context can make them throw, and a
    /// finalizer that throws ends the process.</summary>
    void SuppressFinalizers();
}

/// <summary>One stream and the buffers of one batch in flight.</summary>
internal interface IDeviceStream<TDevIn, TDevOut> : IDisposable
    where TDevIn : unmanaged
    where TDevOut : unmanaged
{
    Span<TDevIn> StagingIn { get; }

    ReadOnlySpan<TDevOut> StagingOut { get; }

    /// <summary>Queues the copy in, the kernel over <paramref name="count"/> items and the copy out; returns before
    /// the device has run them. The caller holds the device's lock and has bound the accelerator.</summary>
    void Enqueue(int count, int inputLength, int outputLength);

    /// <summary>Blocks until everything queued on the stream has finished.</summary>
    void Synchronize();

    /// <inheritdoc cref="IDeviceBackend{TDevIn, TDevOut}.SuppressFinalizers"/>
    void SuppressFinalizers();
}

/// <summary>An ILGPU accelerator (CUDA, or ILGPU's CPU simulator) with its own Context and the kernel loaded on it.</summary>
internal sealed class IlgpuBackend<TDevIn, TDevOut> : IDeviceBackend<TDevIn, TDevOut>
    where TDevIn : unmanaged
    where TDevOut : unmanaged
{
    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly LoadedKernel<TDevIn, TDevOut> _kernel;

    private IlgpuBackend(Context context, Accelerator accelerator, LoadedKernel<TDevIn, TDevOut> kernel)
    {
        _context = context;
        _accelerator = accelerator;
        _kernel = kernel;
    }

    /// <summary>Loads the kernel on <paramref name="accelerator"/>. Takes ownership of <paramref name="context"/> and
    /// <paramref name="accelerator"/>, also when it throws.</summary>
    public static IlgpuBackend<TDevIn, TDevOut> Start<TIn, TOut>(Context context, Accelerator accelerator, KernelProgram<TIn, TOut, TDevIn, TDevOut> program, string deviceName)
    {
        try
        {
            accelerator.Bind();
            return new IlgpuBackend<TDevIn, TDevOut>(context, accelerator, program.Load(accelerator, deviceName));
        }
        catch
        {
            Disposal.Dispose(accelerator, suppressFinalizer: true);
            Disposal.Dispose(context, suppressFinalizer: true);
            throw;
        }
    }

    public void Bind() => _accelerator.Bind();

    public IDeviceStream<TDevIn, TDevOut> CreateStream(long inputLength, long outputLength) =>
        new IlgpuStream(_accelerator, _kernel.Launch, inputLength, outputLength);

    public void SuppressFinalizers()
    {
        if (_kernel.Resources is { } resources)
        {
            GC.SuppressFinalize(resources);
        }

        GC.SuppressFinalize(_accelerator);
        GC.SuppressFinalize(_context);
    }

    public void Dispose()
    {
        List<Exception>? errors = null;
        Disposal.Run(() => _kernel.Dispose(), ref errors);
        Disposal.Run(_accelerator.Dispose, ref errors);
        Disposal.Run(_context.Dispose, ref errors);
        Disposal.ThrowIfAny(errors, "Releasing the accelerator failed.");
    }

    private sealed class IlgpuStream : IDeviceStream<TDevIn, TDevOut>
    {
        private readonly AcceleratorStream _stream;
        private readonly KernelLauncher<TDevIn, TDevOut> _launch;
        private readonly PageLockedArray1D<TDevIn> _stagingIn;
        private readonly PageLockedArray1D<TDevOut> _stagingOut;
        private readonly MemoryBuffer1D<TDevIn, Stride1D.Dense> _deviceIn;
        private readonly MemoryBuffer1D<TDevOut, Stride1D.Dense> _deviceOut;

        public IlgpuStream(Accelerator accelerator, KernelLauncher<TDevIn, TDevOut> launch, long inputLength, long outputLength)
        {
            _launch = launch;
            var created = new List<IDisposable>();
            try
            {
                _stream = Add(created, accelerator.CreateStream());
                _stagingIn = Add(created, accelerator.AllocatePageLocked1D<TDevIn>(inputLength));
                _stagingOut = Add(created, accelerator.AllocatePageLocked1D<TDevOut>(outputLength));
                _deviceIn = Add(created, accelerator.Allocate1D<TDevIn>(inputLength));
                _deviceOut = Add(created, accelerator.Allocate1D<TDevOut>(outputLength));
            }
            catch
            {
                foreach (IDisposable d in created)
                {
                    Disposal.Dispose(d, suppressFinalizer: true);
                }

                throw;
            }
        }

        public Span<TDevIn> StagingIn => _stagingIn.Span;

        public ReadOnlySpan<TDevOut> StagingOut => _stagingOut.Span;

        private IDisposable[] Objects => [_deviceOut, _deviceIn, _stagingOut, _stagingIn, _stream];

        public void Enqueue(int count, int inputLength, int outputLength)
        {
            _deviceIn.View.BaseView.SubView(0, inputLength).CopyFrom(_stream, _stagingIn.ArrayView.SubView(0, inputLength));
            _launch(_stream, count, _deviceIn.View.BaseView, _deviceOut.View.BaseView);
            _deviceOut.View.BaseView.SubView(0, outputLength).CopyTo(_stream, _stagingOut.ArrayView.SubView(0, outputLength));
        }

        public void Synchronize() => _stream.Synchronize();

        public void SuppressFinalizers()
        {
            foreach (IDisposable d in Objects)
            {
                GC.SuppressFinalize(d);
            }
        }

        public void Dispose()
        {
            List<Exception>? errors = null;
            foreach (IDisposable d in Objects)
            {
                Disposal.Run(d.Dispose, ref errors);
            }

            Disposal.ThrowIfAny(errors, "Releasing a stream failed.");
        }

        private static TObject Add<TObject>(List<IDisposable> created, TObject item)
            where TObject : IDisposable
        {
            created.Add(item);
            return item;
        }
    }
}

/// <summary>Disposal that keeps going when one object throws, as releasing a faulted device needs.</summary>
internal static class Disposal
{
    public static void Run(Action action, ref List<Exception>? errors)
    {
        try
        {
            action();
        }
        catch (Exception ex)
        {
            (errors ??= []).Add(ex);
        }
    }

    public static void ThrowIfAny(List<Exception>? errors, string message)
    {
        if (errors is not null)
        {
            throw new AggregateException(message, errors);
        }
    }

    /// <summary>Disposes on a path that is already failing; the failure that got us here is the one to report.</summary>
    public static void Dispose(IDisposable d, bool suppressFinalizer)
    {
        if (suppressFinalizer)
        {
            GC.SuppressFinalize(d);
        }

        try
        {
            d.Dispose();
        }
        catch (Exception)
        {
            // Already failing.
        }
    }
}
