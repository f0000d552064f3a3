using System.Diagnostics.Metrics;
using Batching.Internal;
using Microsoft.Extensions.Logging;

namespace Batching;

/// <summary>Creates batch processors without a dependency injection container.</summary>
public static class BatchProcessor
{
    /// <summary>Creates a processor that runs <paramref name="handler"/> over batches of concurrent <see cref="IBatchProcessor{TIn, TOut}.ProcessAsync"/> calls.</summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <param name="handler">Fills <c>outputs[i]</c> for <c>inputs[i]</c>.</param>
    /// <param name="options">Settings; <see langword="null"/> for the defaults. Copied, so later changes do not affect the processor.</param>
    /// <returns>A running processor. Dispose it to drain and stop.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="handler"/> is null.</exception>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public static IBatchProcessor<TIn, TOut> Create<TIn, TOut>(BatchHandler<TIn, TOut> handler, BatchingOptions? options = null) =>
        Create(handler, options, null);

    internal static BatchEngine<TIn, TOut> Create<TIn, TOut>(BatchHandler<TIn, TOut> handler, BatchingOptions? options, TimeProvider? fallbackTime,
        ILoggerFactory? loggerFactory = null, IMeterFactory? meterFactory = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        BatchingOptions settings = (options ?? new BatchingOptions()).Clone();
        settings.Validate();
        return new BatchEngine<TIn, TOut>(handler, settings, settings.TimeProvider ?? fallbackTime ?? TimeProvider.System, loggerFactory, meterFactory);
    }
}
