using System.Diagnostics.Metrics;
using Batching.Internal;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Batching;

/// <summary>Creates batch processors without a dependency injection container.</summary>
public static class BatchProcessor
{
    /// <summary>Creates a processor that runs <paramref name="handler"/> over batches of concurrent <see cref="IBatchProcessor{TIn, TOut}.ProcessAsync(TIn, CancellationToken)"/> calls.</summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <param name="handler">Fills <c>outputs[i]</c> for <c>inputs[i]</c>.</param>
    /// <param name="options">Settings; <see langword="null"/> for the defaults. Copied, so later changes do not affect the processor.</param>
    /// <returns>A running processor. Dispose it to drain and stop.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="handler"/> is null.</exception>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public static IBatchProcessor<TIn, TOut> Create<TIn, TOut>(BatchHandler<TIn, TOut> handler, BatchingOptions? options = null) =>
        CreateEngine(handler, options, null);

    /// <summary>
    /// Creates a processor that logs through <paramref name="loggerFactory"/> and reports metrics through
    /// <paramref name="meterFactory"/>; for backends and hosts that build processors themselves.
    /// </summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <param name="handler">Fills <c>outputs[i]</c> for <c>inputs[i]</c>.</param>
    /// <param name="options">Settings; <see langword="null"/> for the defaults. Copied.</param>
    /// <param name="loggerFactory">Where logs go; <see langword="null"/> for none.</param>
    /// <param name="meterFactory">Creates the "Batching" meter; <see langword="null"/> to create it directly.</param>
    /// <returns>A running processor, which also implements <see cref="IBatchingHealthContributor"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="handler"/> is null.</exception>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public static IBatchProcessor<TIn, TOut> Create<TIn, TOut>(BatchHandler<TIn, TOut> handler, BatchingOptions? options,
        ILoggerFactory? loggerFactory, IMeterFactory? meterFactory = null) =>
        CreateEngine(handler, options, null, loggerFactory, meterFactory);

    /// <summary>
    /// Creates a processor from a <see cref="BatchProcessorContext"/>: its options, and the container's logger factory,
    /// meter factory and clock. What a factory registered with <c>AddCustomProcessor</c> calls to build the engine it
    /// wraps.
    /// </summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <param name="handler">Fills <c>outputs[i]</c> for <c>inputs[i]</c>.</param>
    /// <param name="context">The processor's resolved options and the container's services.</param>
    /// <returns>A running processor, which also implements <see cref="IBatchingHealthContributor"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="handler"/> or <paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public static IBatchProcessor<TIn, TOut> Create<TIn, TOut>(BatchHandler<TIn, TOut> handler, BatchProcessorContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return CreateEngine(handler, context.Options, null, context.LoggerFactory, context.MeterFactory);
    }

    internal static BatchEngine<TIn, TOut> CreateEngine<TIn, TOut>(BatchHandler<TIn, TOut> handler, BatchingOptions? options, TimeProvider? fallbackTime,
        ILoggerFactory? loggerFactory = null, IMeterFactory? meterFactory = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        BatchingOptions settings = (options ?? new BatchingOptions()).Clone();
        settings.Validate();
        return new BatchEngine<TIn, TOut>(handler, settings, settings.TimeProvider ?? fallbackTime ?? TimeProvider.System, loggerFactory, meterFactory);
    }
}
