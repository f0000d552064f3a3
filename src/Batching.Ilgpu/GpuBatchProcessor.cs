using System.Diagnostics.Metrics;
using Batching.Ilgpu.Internal;
using Microsoft.Extensions.Logging;

namespace Batching.Ilgpu;

/// <summary>Creates GPU batch processors without a dependency injection container.</summary>
/// <remarks>
/// Creating a processor chooses its devices (CUDA first, else the managed CPU path), compiles the kernel, allocates the
/// staging and device buffers for <see cref="BatchingOptions.MaxBatchSize"/>, and runs a warm-up launch, so the first
/// caller pays none of it. It blocks for that time (about half a second per CUDA device): create processors at start-up.
/// </remarks>
public static class GpuBatchProcessor
{
    /// <summary>Creates a processor that runs the per-item kernel <typeparamref name="TKernel"/> over batches.</summary>
    /// <typeparam name="TIn">The input item.</typeparam>
    /// <typeparam name="TOut">The output item.</typeparam>
    /// <typeparam name="TKernel">The kernel struct.</typeparam>
    /// <param name="kernel">The kernel instance; its fields are passed to every launch.</param>
    /// <param name="gpuOptions">Device settings; <see langword="null"/> for the defaults.</param>
    /// <param name="options">Batching settings; <see langword="null"/> for the defaults. Left at 1,
    /// <see cref="BatchingOptions.MaxConcurrentBatches"/> is raised to the devices' in-flight capacity. Copied.</param>
    /// <param name="loggerFactory">Logs device choice, faults and fallbacks; <see langword="null"/> for none.</param>
    /// <returns>A running processor. Dispose it to drain, stop and release the devices.</returns>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    /// <exception cref="KernelCompilationException">The kernel does not compile.</exception>
    /// <exception cref="InvalidOperationException"><see cref="GpuOptions.Device"/> is <see cref="GpuDevicePreference.Cuda"/> and no CUDA device can be used.</exception>
    public static IGpuBatchProcessor<TIn, TOut> Create<TIn, TOut, TKernel>(TKernel kernel = default, GpuOptions? gpuOptions = null,
        BatchingOptions? options = null, ILoggerFactory? loggerFactory = null)
        where TIn : unmanaged
        where TOut : unmanaged
        where TKernel : struct, IItemKernel<TIn, TOut> =>
        CreateCore<TIn, TOut, TKernel>(kernel, gpuOptions, options, loggerFactory, null);

    /// <summary>Creates a processor that runs the row kernel <typeparamref name="TKernel"/> over batches of rows.</summary>
    /// <typeparam name="T">The element type of rows and parameters.</typeparam>
    /// <typeparam name="TKernel">The kernel struct.</typeparam>
    /// <param name="rowOptions">Row widths, device-resident parameters and device settings.</param>
    /// <param name="kernel">The kernel instance; its fields are passed to every launch.</param>
    /// <param name="options">Batching settings, as for <see cref="Create{TIn, TOut, TKernel}"/>.</param>
    /// <param name="loggerFactory">Logs device choice, faults and fallbacks; <see langword="null"/> for none.</param>
    /// <returns>A running processor: <see cref="IGpuRowProcessor{T}.ProcessRowAsync"/> and
    /// <see cref="IGpuRowProcessor{T}.ProcessRowsAsync"/> write results into the caller's buffers (nothing allocated per
    /// call); <see cref="IBatchProcessor{TIn, TOut}.ProcessAsync(TIn, CancellationToken)"/> passes one input row (exactly
    /// <see cref="GpuRowOptions{T}.InputWidth"/> values) and returns a new array of <see cref="GpuRowOptions{T}.OutputWidth"/> values.
    /// <see cref="BatchingOptions.OutputCheck"/> does not apply (the kernel writes every output row); an
    /// <see cref="BatchingOptions.ItemWeight"/> must be a <c>Func&lt;ReadOnlyMemory&lt;T&gt;, int&gt;</c>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="rowOptions"/> is null.</exception>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    /// <exception cref="KernelCompilationException">The kernel does not compile.</exception>
    /// <exception cref="InvalidOperationException"><see cref="GpuOptions.Device"/> is <see cref="GpuDevicePreference.Cuda"/> and no CUDA device can be used.</exception>
    public static IGpuRowProcessor<T> CreateRows<T, TKernel>(GpuRowOptions<T> rowOptions, TKernel kernel = default,
        BatchingOptions? options = null, ILoggerFactory? loggerFactory = null)
        where T : unmanaged
        where TKernel : struct, IRowKernel<T> =>
        CreateRowsCore(rowOptions, kernel, options, loggerFactory, null);

    internal static IGpuBatchProcessor<TIn, TOut> CreateCore<TIn, TOut, TKernel>(TKernel kernel, GpuOptions? gpuOptions, BatchingOptions? options,
        ILoggerFactory? loggerFactory, IMeterFactory? meterFactory)
        where TIn : unmanaged
        where TOut : unmanaged
        where TKernel : struct, IItemKernel<TIn, TOut>
    {
        GpuOptions gpu = gpuOptions ?? new GpuOptions();
        return GpuProcessorBuilder.Build(new ItemProgram<TIn, TOut, TKernel>(kernel, gpu.RejectNonFiniteInputs), gpu, options, loggerFactory, meterFactory);
    }

    internal static IGpuRowProcessor<T> CreateRowsCore<T, TKernel>(GpuRowOptions<T> rowOptions, TKernel kernel, BatchingOptions? options,
        ILoggerFactory? loggerFactory, IMeterFactory? meterFactory,
        DeviceStarter<RowCall<T>, RowWritten, T, T>? devices = null)
        where T : unmanaged
        where TKernel : struct, IRowKernel<T>
    {
        ArgumentNullException.ThrowIfNull(rowOptions);
        rowOptions.Validate();
        var program = new RowProgram<T, TKernel>(kernel, rowOptions.InputWidth, rowOptions.OutputWidth, rowOptions.Parameters.Span, rowOptions.RejectNonFiniteInputs);
        BatchingOptions settings = (options ?? new BatchingOptions()).Clone();

        // The engine carries row calls, whose results land in the callers' buffers: there is no output to check, and a
        // row weight is the user's function of the input row.
        settings.OutputCheck = OutputCheck.None;
        if (settings.ItemWeight is Func<ReadOnlyMemory<T>, int> weight)
        {
            settings.ItemWeight = (Func<RowCall<T>, int>)(call => weight(call.Input));
        }
        else if (settings.ItemWeight is { } other)
        {
            throw new ArgumentException(
                $"BatchingOptions.ItemWeight must be a Func<ReadOnlyMemory<{typeof(T).Name}>, int> for a row processor; it was {other.GetType()}.", nameof(BatchingOptions.ItemWeight));
        }

        GpuProcessor<RowCall<T>, RowWritten> inner = GpuProcessorBuilder.Build(program, rowOptions, settings, loggerFactory, meterFactory, devices);
        return new GpuRowProcessor<T>(inner, rowOptions.InputWidth, rowOptions.OutputWidth);
    }
}
