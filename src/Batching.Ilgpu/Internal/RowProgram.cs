using System.Buffers;
using System.Reflection;
using ILGPU;
using ILGPU.Runtime;

namespace Batching.Ilgpu.Internal;

/// <summary>A row kernel: <see cref="KernelProgram{TIn, TOut, TDevIn, TDevOut}.InputWidth"/> elements in and
/// <see cref="KernelProgram{TIn, TOut, TDevIn, TDevOut}.OutputWidth"/> out per item, with device-resident parameters.
/// Items are <see cref="RowCall{T}"/>s: results go straight into each caller's own buffer, never a new array.</summary>
/// <remarks>Every read of a caller's input and every write of its output happens inside the call's
/// <see cref="RowGuard"/>, so a call that has already completed (cancelled while its batch ran) is never touched.</remarks>
internal sealed unsafe class RowProgram<T, TKernel> : KernelProgram<RowCall<T>, RowWritten, T, T>
    where T : unmanaged
    where TKernel : struct, IRowKernel<T>
{
    private readonly TKernel _kernel;
    private readonly T[] _parameters; // pinned, so the managed path can hand out a pointer
    private readonly bool _rejectNonFinite;

    public RowProgram(TKernel kernel, int inputWidth, int outputWidth, ReadOnlySpan<T> parameters, bool rejectNonFinite)
        : base(typeof(TKernel), inputWidth, outputWidth)
    {
        _kernel = kernel;
        _parameters = GC.AllocateUninitializedArray<T>(parameters.Length, pinned: true);
        parameters.CopyTo(_parameters);
        _rejectNonFinite = rejectNonFinite;
    }

    public override MethodInfo EntryPoint =>
        typeof(KernelEntryPoints).GetMethod(nameof(KernelEntryPoints.Rows))!.MakeGenericMethod(typeof(T), typeof(TKernel));

    public override LoadedKernel<T, T> Load(Accelerator accelerator, string deviceName)
    {
        Action<AcceleratorStream, Index1D, DeviceRowBatch<T>, ArrayView<T>, TKernel> kernel = Compile(accelerator, deviceName,
            () => accelerator.LoadAutoGroupedKernel<Index1D, DeviceRowBatch<T>, ArrayView<T>, TKernel>(KernelEntryPoints.Rows<T, TKernel>));

        // Uploaded once per accelerator; every launch passes the same device view. Failing here (out of device
        // memory) is the device's problem, not the kernel's.
        MemoryBuffer1D<T, Stride1D.Dense> parameters = accelerator.Allocate1D<T>(Math.Max(1, _parameters.Length));
        try
        {
            if (_parameters.Length > 0)
            {
                parameters.View.CopyFromCPU(_parameters);
            }
        }
        catch
        {
            parameters.Dispose();
            throw;
        }

        ArrayView<T> parameterView = parameters.View.BaseView.SubView(0, _parameters.Length);
        TKernel instance = _kernel;
        int inputWidth = InputWidth;
        int outputWidth = OutputWidth;
        return new LoadedKernel<T, T>(
            (stream, count, inputs, outputs) => kernel(stream, count * outputWidth,
                new DeviceRowBatch<T>(inputs, parameterView, count, inputWidth, outputWidth), outputs, instance),
            parameters);
    }

    public override void Pack(ReadOnlySpan<RowCall<T>> items, Span<T> staging, Span<RowWritten> outputs)
    {
        int width = InputWidth;
        for (int i = 0; i < items.Length; i++)
        {
            Span<T> target = staging.Slice(i * width, width);
            try
            {
                if (!items[i].Read(target))
                {
                    // The call has completed already: its result will be dropped, and its buffer is the caller's again.
                    target.Clear();
                }
            }
            catch (Exception ex)
            {
                // The caller's memory cannot be read (a disposed native buffer): that row fails, not its batch or device.
                target.Clear();
                outputs[i] = new RowWritten(ex);
            }
        }
    }

    public override void Unpack(ReadOnlySpan<T> staging, ReadOnlySpan<RowCall<T>> inputs, Span<RowWritten> outputs)
    {
        int width = OutputWidth;
        for (int i = 0; i < inputs.Length; i++)
        {
            if (outputs[i].Error is null)
            {
                Write(inputs[i], staging.Slice(i * width, width), ref outputs[i]);
            }
        }
    }

    private static void Write(RowCall<T> call, ReadOnlySpan<T> result, ref RowWritten written)
    {
        try
        {
            call.Write(result);
        }
        catch (Exception ex)
        {
            written = new RowWritten(ex);
        }
    }

    public override void RunManaged(ReadOnlyMemory<RowCall<T>> inputs, Memory<RowWritten> outputs, CancellationToken cancellationToken)
    {
        int count = inputs.Length;
        int inputWidth = InputWidth;
        int outputWidth = OutputWidth;
        TKernel kernel = _kernel;
        long cost = (long)Math.Max(inputWidth, 1) * outputWidth;

        // The kernel computes into a scratch row, and only the copy into the caller's buffer happens inside its
        // guard: user code never runs while a completing caller would have to wait for it.
        if (kernel is ICpuRowKernel<T>)
        {
            T[] parameters = _parameters;
            ForChunks(count, cost, cancellationToken, (start, end) =>
            {
                var cpu = (ICpuRowKernel<T>)kernel;
                T[] scratch = ArrayPool<T>.Shared.Rent(inputWidth + outputWidth);
                try
                {
                    ReadOnlySpan<RowCall<T>> calls = inputs.Span;
                    Span<RowWritten> written = outputs.Span;
                    for (int i = start; i < end; i++)
                    {
                        Span<T> row = scratch.AsSpan(0, inputWidth);
                        Span<T> result = scratch.AsSpan(inputWidth, outputWidth);
                        bool pending;
                        try
                        {
                            pending = calls[i].Read(row);
                        }
                        catch (Exception ex)
                        {
                            written[i] = new RowWritten(ex);
                            continue;
                        }

                        if (pending)
                        {
                            cpu.ApplyRow(row, result, parameters);
                            Write(calls[i], result, ref written[i]);
                        }
                    }
                }
                finally
                {
                    ArrayPool<T>.Shared.Return(scratch);
                }
            });
            return;
        }

        // The generic Apply needs the whole batch as one row-major block, as on the device.
        T[] staged = ArrayPool<T>.Shared.Rent(count * inputWidth);
        try
        {
            Pack(inputs.Span, staged, outputs.Span);
            fixed (T* stagedPointer = staged)
            fixed (T* parameterPointer = _parameters)
            {
                var batch = new HostRowBatch<T>(stagedPointer, count, inputWidth, outputWidth, parameterPointer, _parameters.Length);
                ForChunks(count, cost, cancellationToken, (start, end) =>
                {
                    T[] scratch = ArrayPool<T>.Shared.Rent(outputWidth);
                    try
                    {
                        ReadOnlySpan<RowCall<T>> calls = inputs.Span;
                        Span<RowWritten> written = outputs.Span;
                        for (int row = start; row < end; row++)
                        {
                            if (written[row].Error is not null)
                            {
                                continue;
                            }

                            Span<T> result = scratch.AsSpan(0, outputWidth);
                            for (int column = 0; column < result.Length; column++)
                            {
                                result[column] = kernel.Apply(row, column, batch);
                            }

                            Write(calls[row], result, ref written[row]);
                        }
                    }
                    finally
                    {
                        ArrayPool<T>.Shared.Return(scratch);
                    }
                });
            }
        }
        finally
        {
            ArrayPool<T>.Shared.Return(staged);
        }
    }

    // Widths are checked once, by GpuRowProcessor, before a RowCall exists (naming the caller's own parameter); only the
    // optional NaN check is left for the engine's entry.
    public override string? Check(RowCall<T> call) =>
        _rejectNonFinite && !Finite.All(call.Input.Span)
            ? $"The row holds a NaN or infinite value, which {typeof(TKernel).Name} does not accept (GpuOptions.RejectNonFiniteInputs)."
            : null;
}
