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

    /// <summary>Compiles the kernel for <paramref name="accelerator"/> and uploads what it keeps on the device.</summary>
    /// <exception cref="KernelCompilationException">The kernel does not compile; no other device will compile it either.</exception>
    /// <remarks>Any other exception (device out of memory, a driver error) is the device's, not the kernel's: the
    /// device is skipped, and the next one (or the CPU path) is used.</remarks>
    public abstract LoadedKernel<TDevIn, TDevOut> Load(Accelerator accelerator, string deviceName);

    /// <summary>Stages <paramref name="items"/> for the device. Must not throw for inputs <see cref="Check"/> accepted; an
    /// item whose own memory fails to read gets its failure in <paramref name="outputs"/> (row calls).</summary>
    public abstract void Pack(ReadOnlySpan<TIn> items, Span<TDevIn> staging, Span<TOut> outputs);

    /// <summary>Hands a finished batch's device results to its items.</summary>
    public abstract void Unpack(ReadOnlySpan<TDevOut> staging, ReadOnlySpan<TIn> inputs, Span<TOut> outputs);

    public abstract void RunManaged(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken);

    /// <summary>Returns why <paramref name="input"/> must be rejected, or null to accept it.</summary>
    public abstract string? Check(TIn input);

    /// <summary>Runs ILGPU's compiler, reporting its failures as the kernel's.</summary>
    protected TDelegate Compile<TDelegate>(Accelerator accelerator, string deviceName, Func<TDelegate> compile)
    {
        try
        {
            return compile();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw new KernelCompilationException(KernelType, $"{deviceName} ({accelerator.AcceleratorType})", ex);
        }
    }

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

    public override LoadedKernel<TIn, TOut> Load(Accelerator accelerator, string deviceName)
    {
        Action<AcceleratorStream, Index1D, ArrayView<TIn>, ArrayView<TOut>, TKernel> kernel = Compile(accelerator, deviceName,
            () => accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<TIn>, ArrayView<TOut>, TKernel>(KernelEntryPoints.Items<TIn, TOut, TKernel>));
        TKernel instance = _kernel;
        return new LoadedKernel<TIn, TOut>((stream, count, inputs, outputs) => kernel(stream, count, inputs, outputs, instance), null);
    }

    public override void Pack(ReadOnlySpan<TIn> items, Span<TIn> staging, Span<TOut> outputs) => items.CopyTo(staging);

    public override void Unpack(ReadOnlySpan<TOut> staging, ReadOnlySpan<TIn> inputs, Span<TOut> outputs) => staging.CopyTo(outputs);

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

