using Batching;
using Batching.Ilgpu;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>
/// Registers GPU batch processors as singletons of <see cref="IBatchProcessor{TIn, TOut}"/> and
/// <see cref="IGpuBatchProcessor{TIn, TOut}"/> (the same instance), row processors also as <see cref="IGpuRowProcessor{T}"/>. Their <see cref="BatchingOptions"/> are named
/// options as for <c>AddProcessor</c> (see <see cref="BatchingBuilderExtensions.OptionsName{TIn, TOut}"/>), and their
/// <see cref="GpuOptions"/> or <see cref="GpuRowOptions{T}"/> are named options of the same name.
/// </summary>
/// <remarks>The processor is built, and its kernel compiled and warmed, when it is first resolved: resolve it at
/// start-up so that no caller pays for it. An <see cref="Microsoft.Extensions.Logging.ILoggerFactory"/> in the container receives the device logs.</remarks>
public static class GpuBatchingBuilderExtensions
{
    /// <summary>Registers a processor that runs the per-item kernel <typeparamref name="TKernel"/>.</summary>
    /// <typeparam name="TIn">The input item.</typeparam>
    /// <typeparam name="TOut">The output item.</typeparam>
    /// <typeparam name="TKernel">The kernel struct.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="kernel">The kernel instance; its fields are passed to every launch.</param>
    /// <param name="configureGpu">Sets device options; <see langword="null"/> for the defaults.</param>
    /// <param name="configure">Sets batching options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddGpuProcessor<TIn, TOut, TKernel>(this IBatchingBuilder builder, TKernel kernel = default,
        Action<GpuOptions>? configureGpu = null, Action<BatchingOptions>? configure = null)
        where TIn : unmanaged
        where TOut : unmanaged
        where TKernel : struct, IItemKernel<TIn, TOut> =>
        Register<TIn, TOut, GpuOptions, IGpuBatchProcessor<TIn, TOut>>(builder, null, configureGpu, configure,
            (gpu, context) => GpuBatchProcessor.CreateCore<TIn, TOut, TKernel>(kernel, gpu, context.Options, context.LoggerFactory, context.MeterFactory));

    /// <summary>Registers a keyed processor that runs the per-item kernel <typeparamref name="TKernel"/>.</summary>
    /// <typeparam name="TIn">The input item.</typeparam>
    /// <typeparam name="TOut">The output item.</typeparam>
    /// <typeparam name="TKernel">The kernel struct.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The service key, also the processor's name in logs and the options' name.</param>
    /// <param name="kernel">The kernel instance; its fields are passed to every launch.</param>
    /// <param name="configureGpu">Sets device options; <see langword="null"/> for the defaults.</param>
    /// <param name="configure">Sets batching options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddKeyedGpuProcessor<TIn, TOut, TKernel>(this IBatchingBuilder builder, string name, TKernel kernel = default,
        Action<GpuOptions>? configureGpu = null, Action<BatchingOptions>? configure = null)
        where TIn : unmanaged
        where TOut : unmanaged
        where TKernel : struct, IItemKernel<TIn, TOut>
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return Register<TIn, TOut, GpuOptions, IGpuBatchProcessor<TIn, TOut>>(builder, name, configureGpu, configure,
            (gpu, context) => GpuBatchProcessor.CreateCore<TIn, TOut, TKernel>(kernel, gpu, context.Options, context.LoggerFactory, context.MeterFactory));
    }

    /// <summary>Registers a processor that runs the row kernel <typeparamref name="TKernel"/>, resolvable as
    /// <see cref="IGpuRowProcessor{T}"/> (results into the caller's buffers) and as
    /// <see cref="IBatchProcessor{TIn, TOut}"/> of <see cref="ReadOnlyMemory{T}"/> rows to <typeparamref name="T"/>[] rows.</summary>
    /// <typeparam name="T">The element type of rows and parameters.</typeparam>
    /// <typeparam name="TKernel">The kernel struct.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="configureRows">Sets the row widths, the device-resident parameters and device options; required.</param>
    /// <param name="kernel">The kernel instance; its fields are passed to every launch.</param>
    /// <param name="configure">Sets batching options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddGpuRowProcessor<T, TKernel>(this IBatchingBuilder builder, Action<GpuRowOptions<T>> configureRows,
        TKernel kernel = default, Action<BatchingOptions>? configure = null)
        where T : unmanaged
        where TKernel : struct, IRowKernel<T>
    {
        ArgumentNullException.ThrowIfNull(configureRows);
        return Register<ReadOnlyMemory<T>, T[], GpuRowOptions<T>, IGpuRowProcessor<T>>(builder, null, configureRows, configure,
            (rows, context) => GpuBatchProcessor.CreateRowsCore(rows, kernel, context.Options, context.LoggerFactory, context.MeterFactory));
    }

    /// <summary>Registers a keyed processor that runs the row kernel <typeparamref name="TKernel"/>.</summary>
    /// <typeparam name="T">The element type of rows and parameters.</typeparam>
    /// <typeparam name="TKernel">The kernel struct.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The service key, also the processor's name in logs and the options' name.</param>
    /// <param name="configureRows">Sets the row widths, the device-resident parameters and device options; required.</param>
    /// <param name="kernel">The kernel instance; its fields are passed to every launch.</param>
    /// <param name="configure">Sets batching options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddKeyedGpuRowProcessor<T, TKernel>(this IBatchingBuilder builder, string name, Action<GpuRowOptions<T>> configureRows,
        TKernel kernel = default, Action<BatchingOptions>? configure = null)
        where T : unmanaged
        where TKernel : struct, IRowKernel<T>
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(configureRows);
        return Register<ReadOnlyMemory<T>, T[], GpuRowOptions<T>, IGpuRowProcessor<T>>(builder, name, configureRows, configure,
            (rows, context) => GpuBatchProcessor.CreateRowsCore(rows, kernel, context.Options, context.LoggerFactory, context.MeterFactory));
    }

    /// <summary>Registers through the core's one registration path; only the device options are the GPU package's own.</summary>
    private static IBatchingBuilder Register<TIn, TOut, TGpuOptions, TProcessor>(IBatchingBuilder builder, string? key, Action<TGpuOptions>? configureGpu,
        Action<BatchingOptions>? configure, Func<TGpuOptions, BatchProcessorContext, TProcessor> create)
        where TGpuOptions : GpuOptions
        where TProcessor : class, IGpuBatchProcessor<TIn, TOut>
    {
        ArgumentNullException.ThrowIfNull(builder);
        OptionsBuilder<TGpuOptions> gpu = builder.Services.AddOptions<TGpuOptions>(BatchingBuilderExtensions.OptionsName<TIn, TOut>(key));
        if (configureGpu is not null)
        {
            gpu.Configure(configureGpu);
        }

        builder.AddCustomProcessor<TIn, TOut, TProcessor>(key,
            context => create(context.Services.GetRequiredService<IOptionsMonitor<TGpuOptions>>().Get(context.OptionsName), context), configure);
        if (typeof(TProcessor) != typeof(IGpuBatchProcessor<TIn, TOut>))
        {
            // The row processor is also resolvable as the GPU interface its callers of the T[] shape expect.
            if (key is null)
            {
                builder.Services.AddSingleton<IGpuBatchProcessor<TIn, TOut>>(sp => sp.GetRequiredService<TProcessor>());
            }
            else
            {
                builder.Services.AddKeyedSingleton<IGpuBatchProcessor<TIn, TOut>>(key, (sp, k) => sp.GetRequiredKeyedService<TProcessor>(k));
            }
        }

        return builder;
    }
}
