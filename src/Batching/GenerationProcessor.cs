using System.Diagnostics.Metrics;
using Batching.Internal.Generation;
using Microsoft.Extensions.Logging;

namespace Batching;

/// <summary>Creates generation processors (continuous batching) without a dependency injection container.</summary>
public static class GenerationProcessor
{
    /// <summary>Creates a processor that runs <paramref name="step"/> over every active sequence, one token per sequence per step.</summary>
    /// <typeparam name="TPrompt">The type of one request.</typeparam>
    /// <typeparam name="TState">A sequence's model state, advanced in place by each step.</typeparam>
    /// <typeparam name="TToken">The type of one generated token.</typeparam>
    /// <param name="start">Turns a prompt into its sequence's initial state; called once per request, on the consumer's
    /// thread, when its enumeration starts (what it throws fails that request alone).</param>
    /// <param name="step">One iteration of the model over every active sequence.</param>
    /// <param name="options">Settings; <see langword="null"/> for the defaults. Copied, so later changes do not affect the processor.</param>
    /// <returns>A running processor, which also implements <see cref="IBatchingHealthContributor"/>. Dispose it to finish and stop.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="start"/> or <paramref name="step"/> is null.</exception>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public static IGenerationProcessor<TPrompt, TToken> Create<TPrompt, TState, TToken>(Func<TPrompt, TState> start, GenerationStep<TState, TToken> step, GenerationOptions? options = null) =>
        Create(start, step, options, null, null);

    /// <summary>Creates a processor that logs through <paramref name="loggerFactory"/> and reports metrics through <paramref name="meterFactory"/>.</summary>
    /// <typeparam name="TPrompt">The type of one request.</typeparam>
    /// <typeparam name="TState">A sequence's model state.</typeparam>
    /// <typeparam name="TToken">The type of one generated token.</typeparam>
    /// <param name="start">Turns a prompt into its sequence's initial state.</param>
    /// <param name="step">One iteration of the model over every active sequence.</param>
    /// <param name="options">Settings; <see langword="null"/> for the defaults. Copied.</param>
    /// <param name="loggerFactory">Where logs go; <see langword="null"/> for none.</param>
    /// <param name="meterFactory">Creates the "Batching" meter; <see langword="null"/> to create it directly.</param>
    /// <returns>A running processor, which also implements <see cref="IBatchingHealthContributor"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="start"/> or <paramref name="step"/> is null.</exception>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public static IGenerationProcessor<TPrompt, TToken> Create<TPrompt, TState, TToken>(Func<TPrompt, TState> start, GenerationStep<TState, TToken> step,
        GenerationOptions? options, ILoggerFactory? loggerFactory, IMeterFactory? meterFactory = null)
    {
        ArgumentNullException.ThrowIfNull(start);
        ArgumentNullException.ThrowIfNull(step);
        GenerationOptions settings = (options ?? new GenerationOptions()).Clone();
        settings.Validate();
        _ = settings.ResolveSequenceWeight<TState>();
        return new GenerationEngine<TPrompt, TState, TToken>(start, step, settings, settings.TimeProvider ?? TimeProvider.System, loggerFactory, meterFactory);
    }
}
