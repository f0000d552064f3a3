using System.Buffers;
using System.Numerics;
using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace Batching.Ilgpu.Internal;

/// <summary>Starts one batch on a stream: <c>count</c> items from <c>inputs</c> into <c>outputs</c>.</summary>
internal delegate void KernelLauncher<TDevIn, TDevOut>(AcceleratorStream stream, int count, ArrayView<TDevIn> inputs, ArrayView<TDevOut> outputs)
    where TDevIn : unmanaged
    where TDevOut : unmanaged;

/// <summary>A kernel loaded on one accelerator, with the device memory it owns (parameters).</summary>
internal sealed class LoadedKernel<TDevIn, TDevOut>(KernelLauncher<TDevIn, TDevOut> launch, IDisposable? resources) : IDisposable
    where TDevIn : unmanaged
    where TDevOut : unmanaged
{
    public KernelLauncher<TDevIn, TDevOut> Launch { get; } = launch;

    public IDisposable? Resources { get; } = resources;

    public void Dispose() => Resources?.Dispose();
}

/// <summary>
/// Everything device-independent about one processor's kernel: how items are staged as device elements, how the
/// batched kernel is loaded, how the managed CPU path runs it, and which inputs are rejected.
/// </summary>
internal abstract class KernelProgram<TIn, TOut, TDevIn, TDevOut>
    where TDevIn : unmanaged
    where TDevOut : unmanaged
{
    protected KernelProgram(Type kernelType, int inputWidth, int outputWidth)
    {
        KernelType = kernelType;
        InputWidth = inputWidth;
        OutputWidth = outputWidth;
    }

    public Type KernelType { get; }

    /// <summary>Device elements per input item.</summary>
    public int InputWidth { get; }

    /// <summary>Device elements per output item.</summary>
    public int OutputWidth { get; }

    /// <summary>The closed generic entry point, for compiling to PTX without a device.</summary>
    public abstract MethodInfo EntryPoint { get; }

    public abstract LoadedKernel<TDevIn, TDevOut> Load(Accelerator accelerator);

    public abstract void Pack(ReadOnlySpan<TIn> items, Span<TDevIn> staging);

    public abstract void Unpack(ReadOnlySpan<TDevOut> staging, Span<TOut> outputs);

    public abstract void RunManaged(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken);

    /// <summary>Returns why <paramref name="input"/> must be rejected, or null to accept it.</summary>
    public abstract string? Check(TIn input);

    protected static void ForChunks(int count, long costPerItem, CancellationToken cancellationToken, Action<int, int> body)
    {
        // Small batches run inline: a parallel loop costs a few microseconds to start.
        const long InlineCost = 1 << 15;
        int workers = Math.Min(Environment.ProcessorCount, count);
        if (workers <= 1 || count * costPerItem < InlineCost)
        {
            body(0, count);
            return;
        }

        int chunk = (count + workers - 1) / workers;
        Parallel.For(0, workers, new ParallelOptions { CancellationToken = cancellationToken, MaxDegreeOfParallelism = workers },
            w => body(w * chunk, Math.Min(count, (w + 1) * chunk)));
    }
}

internal static class Finite
{
    /// <summary>Whether every element is finite; true for element types that are not floating point.</summary>
    public static bool All<T>(ReadOnlySpan<T> values)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            return AllVector(MemoryMarshal.Cast<T, float>(values), float.IsFinite);
        }

        if (typeof(T) == typeof(double))
        {
            return AllVector(MemoryMarshal.Cast<T, double>(values), double.IsFinite);
        }

        if (typeof(T) == typeof(System.Half))
        {
            foreach (System.Half h in MemoryMarshal.Cast<T, System.Half>(values))
            {
                if (!System.Half.IsFinite(h))
                {
                    return false;
                }
            }
        }

        if (typeof(T) == typeof(ILGPU.Half))
        {
            foreach (ILGPU.Half h in MemoryMarshal.Cast<T, ILGPU.Half>(values))
            {
                if (!ILGPU.Half.IsFinite(h))
                {
                    return false;
                }
            }
        }

        return true;
    }

    private static bool AllVector<TFloat>(ReadOnlySpan<TFloat> values, Func<TFloat, bool> isFinite)
        where TFloat : unmanaged, INumber<TFloat>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && values.Length >= Vector<TFloat>.Count)
        {
            // x - x is 0 for finite x and NaN for NaN or infinity.
            ReadOnlySpan<Vector<TFloat>> vectors = MemoryMarshal.Cast<TFloat, Vector<TFloat>>(values);
            foreach (Vector<TFloat> v in vectors)
            {
                if (!Vector.EqualsAll(v - v, Vector<TFloat>.Zero))
                {
                    return false;
                }
            }

            i = vectors.Length * Vector<TFloat>.Count;
        }

        for (; i < values.Length; i++)
        {
            if (!isFinite(values[i]))
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>A per-item kernel: one device element in and one out per item.</summary>
internal sealed class ItemProgram<TIn, TOut, TKernel> : KernelProgram<TIn, TOut, TIn, TOut>
    where TIn : unmanaged
    where TOut : unmanaged
    where TKernel : struct, IItemKernel<TIn, TOut>
{
    private static readonly bool IsFloatingPoint = typeof(TIn) == typeof(float) || typeof(TIn) == typeof(double) || typeof(TIn) == typeof(System.Half) || typeof(TIn) == typeof(ILGPU.Half);
    private readonly TKernel _kernel;
    private readonly bool _rejectNonFinite;

    public ItemProgram(TKernel kernel, bool rejectNonFinite)
        : base(typeof(TKernel), 1, 1)
    {
        _kernel = kernel;
        _rejectNonFinite = rejectNonFinite && IsFloatingPoint;
    }

    public override MethodInfo EntryPoint =>
        typeof(KernelEntryPoints).GetMethod(nameof(KernelEntryPoints.Items))!.MakeGenericMethod(typeof(TIn), typeof(TOut), typeof(TKernel));

    public override LoadedKernel<TIn, TOut> Load(Accelerator accelerator)
    {
        Action<AcceleratorStream, Index1D, ArrayView<TIn>, ArrayView<TOut>, TKernel> kernel =
            accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<TIn>, ArrayView<TOut>, TKernel>(KernelEntryPoints.Items<TIn, TOut, TKernel>);
        TKernel instance = _kernel;
        return new LoadedKernel<TIn, TOut>((stream, count, inputs, outputs) => kernel(stream, count, inputs, outputs, instance), null);
    }

    public override void Pack(ReadOnlySpan<TIn> items, Span<TIn> staging) => items.CopyTo(staging);

    public override void Unpack(ReadOnlySpan<TOut> staging, Span<TOut> outputs) => staging.CopyTo(outputs);

    public override void RunManaged(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken)
    {
        TKernel kernel = _kernel;
        ForChunks(inputs.Length, 16, cancellationToken, (start, end) =>
        {
            ReadOnlySpan<TIn> slice = inputs.Span[start..end];
            Span<TOut> results = outputs.Span[start..end];
            if (kernel is ICpuItemKernel<TIn, TOut>)
            {
                ((ICpuItemKernel<TIn, TOut>)kernel).ApplyAll(slice, results);
                return;
            }

            for (int i = 0; i < slice.Length; i++)
            {
                results[i] = kernel.Apply(slice[i]);
            }
        });
    }

    public override string? Check(TIn input) =>
        _rejectNonFinite && !Finite.All(MemoryMarshal.CreateReadOnlySpan(ref input, 1))
            ? $"The input is NaN or infinite, which {typeof(TKernel).Name} does not accept (GpuOptions.RejectNonFiniteInputs)."
            : null;
}

/// <summary>A row kernel: <see cref="KernelProgram{TIn, TOut, TDevIn, TDevOut}.InputWidth"/> elements in and
/// <see cref="KernelProgram{TIn, TOut, TDevIn, TDevOut}.OutputWidth"/> out per item, with device-resident parameters.</summary>
internal sealed unsafe class RowProgram<T, TKernel> : KernelProgram<ReadOnlyMemory<T>, T[], T, T>
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

    public override LoadedKernel<T, T> Load(Accelerator accelerator)
    {
        Action<AcceleratorStream, Index2D, DeviceRowBatch<T>, ArrayView<T>, TKernel> kernel =
            accelerator.LoadAutoGroupedKernel<Index2D, DeviceRowBatch<T>, ArrayView<T>, TKernel>(KernelEntryPoints.Rows<T, TKernel>);
        // Uploaded once per accelerator; every launch passes the same device view.
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
            (stream, count, inputs, outputs) => kernel(stream, new Index2D(outputWidth, count),
                new DeviceRowBatch<T>(inputs, parameterView, count, inputWidth, outputWidth), outputs, instance),
            parameters);
    }

    public override void Pack(ReadOnlySpan<ReadOnlyMemory<T>> items, Span<T> staging)
    {
        int width = InputWidth;
        for (int i = 0; i < items.Length; i++)
        {
            ReadOnlySpan<T> row = items[i].Span;
            if (row.Length != width)
            {
                // Checked on entry already; this guards the staging buffer against any path that skipped it.
                throw new ArgumentException($"Row {i} has {row.Length} values; the processor's InputWidth is {width}.", nameof(items));
            }

            row.CopyTo(staging.Slice(i * width, width));
        }
    }

    public override void Unpack(ReadOnlySpan<T> staging, Span<T[]> outputs)
    {
        int width = OutputWidth;
        for (int i = 0; i < outputs.Length; i++)
        {
            outputs[i] = staging.Slice(i * width, width).ToArray();
        }
    }

    public override void RunManaged(ReadOnlyMemory<ReadOnlyMemory<T>> inputs, Memory<T[]> outputs, CancellationToken cancellationToken)
    {
        int count = inputs.Length;
        int inputWidth = InputWidth;
        int outputWidth = OutputWidth;
        TKernel kernel = _kernel;
        long cost = (long)Math.Max(inputWidth, 1) * outputWidth;
        if (kernel is ICpuRowKernel<T>)
        {
            T[] parameters = _parameters;
            ForChunks(count, cost, cancellationToken, (start, end) =>
            {
                var cpu = (ICpuRowKernel<T>)kernel;
                ReadOnlySpan<ReadOnlyMemory<T>> rows = inputs.Span;
                Span<T[]> results = outputs.Span;
                for (int i = start; i < end; i++)
                {
                    var output = new T[outputWidth];
                    cpu.ApplyRow(rows[i].Span, output, parameters);
                    results[i] = output;
                }
            });
            return;
        }

        // The generic Apply needs the whole batch as one row-major block, as on the device.
        T[] staged = ArrayPool<T>.Shared.Rent(count * inputWidth);
        try
        {
            Pack(inputs.Span, staged);
            fixed (T* stagedPointer = staged)
            fixed (T* parameterPointer = _parameters)
            {
                var batch = new HostRowBatch<T>(stagedPointer, count, inputWidth, outputWidth, parameterPointer, _parameters.Length);
                ForChunks(count, cost, cancellationToken, (start, end) =>
                {
                    Span<T[]> results = outputs.Span;
                    for (int row = start; row < end; row++)
                    {
                        var output = new T[outputWidth];
                        for (int column = 0; column < output.Length; column++)
                        {
                            output[column] = kernel.Apply(row, column, batch);
                        }

                        results[row] = output;
                    }
                });
            }
        }
        finally
        {
            ArrayPool<T>.Shared.Return(staged);
        }
    }

    public override string? Check(ReadOnlyMemory<T> input)
    {
        if (input.Length != InputWidth)
        {
            return $"The row has {input.Length} values; the processor's InputWidth is {InputWidth}.";
        }

        return _rejectNonFinite && !Finite.All(input.Span)
            ? $"The row holds a NaN or infinite value, which {typeof(TKernel).Name} does not accept (GpuOptions.RejectNonFiniteInputs)."
            : null;
    }
}
