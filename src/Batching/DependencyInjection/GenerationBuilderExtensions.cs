using Batching;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>
/// Registers <see cref="IGenerationProcessor{TPrompt, TToken}"/> singletons on the <c>AddBatching()</c> builder. Each
/// processor's <see cref="GenerationOptions"/> are named options (see <see cref="OptionsName{TPrompt, TToken}"/>),
/// validated when the processor is first resolved. Processors are disposed with the container and reported by
/// <see cref="BatchingHealthCheck"/>.
/// </summary>
public static class GenerationBuilderExtensions
{
    /// <summary>Registers a singleton <see cref="IGenerationProcessor{TPrompt, TToken}"/> over <paramref name="step"/>.</summary>
    /// <typeparam name="TPrompt">The type of one request.</typeparam>
    /// <typeparam name="TState">A sequence's model state.</typeparam>
    /// <typeparam name="TToken">The type of one generated token.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="start">Turns a prompt into its sequence's initial state.</param>
    /// <param name="step">One iteration of the model over every active sequence.</param>
    /// <param name="configure">Sets options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddGenerationProcessor<TPrompt, TState, TToken>(this IBatchingBuilder builder, Func<TPrompt, TState> start,
        GenerationStep<TState, TToken> step, Action<GenerationOptions>? configure = null) =>
        Add(builder, null, start, step, configure);

    /// <summary>Registers a keyed singleton <see cref="IGenerationProcessor{TPrompt, TToken}"/>, so one app can host several
    /// models. Resolve it with <c>[FromKeyedServices(name)]</c> or <c>GetRequiredKeyedService</c>.</summary>
    /// <typeparam name="TPrompt">The type of one request.</typeparam>
    /// <typeparam name="TState">A sequence's model state.</typeparam>
    /// <typeparam name="TToken">The type of one generated token.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The service key, also the processor's name in logs and metrics.</param>
    /// <param name="start">Turns a prompt into its sequence's initial state.</param>
    /// <param name="step">One iteration of the model over every active sequence.</param>
    /// <param name="configure">Sets options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddKeyedGenerationProcessor<TPrompt, TState, TToken>(this IBatchingBuilder builder, string name, Func<TPrompt, TState> start,
        GenerationStep<TState, TToken> step, Action<GenerationOptions>? configure = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return Add(builder, name, start, step, configure);
    }

    /// <summary>The name of the <see cref="GenerationOptions"/> a processor registered here uses: the key for a keyed
    /// processor, else <c>"Generation:{TPrompt}->{TToken}"</c> with the types' full names.</summary>
    /// <typeparam name="TPrompt">The type of one request.</typeparam>
    /// <typeparam name="TToken">The type of one generated token.</typeparam>
    /// <param name="key">The processor's key, or <see langword="null"/>.</param>
    /// <returns>The options name.</returns>
    public static string OptionsName<TPrompt, TToken>(string? key) =>
        key ?? $"Generation:{typeof(TPrompt).FullName}->{typeof(TToken).FullName}";

    private static IBatchingBuilder Add<TPrompt, TState, TToken>(IBatchingBuilder builder, string? key, Func<TPrompt, TState> start,
        GenerationStep<TState, TToken> step, Action<GenerationOptions>? configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(start);
        ArgumentNullException.ThrowIfNull(step);
        string optionsName = OptionsName<TPrompt, TToken>(key);
        OptionsBuilder<GenerationOptions> options = builder.Services.AddOptions<GenerationOptions>(optionsName);
        if (configure is not null)
        {
            options.Configure(configure);
        }

        IGenerationProcessor<TPrompt, TToken> Build(IServiceProvider services)
        {
            GenerationOptions settings = services.GetRequiredService<IOptionsMonitor<GenerationOptions>>().Get(optionsName).Clone();
            settings.TimeProvider ??= services.GetService<TimeProvider>();
            if (string.IsNullOrEmpty(settings.Name))
            {
                settings.Name = key ?? $"{typeof(TPrompt).Name}->{typeof(TToken).Name}";
            }

            return GenerationProcessor.Create(start, step, settings, services.GetService<Logging.ILoggerFactory>(), services.GetService<System.Diagnostics.Metrics.IMeterFactory>());
        }

        if (key is null)
        {
            builder.Services.AddSingleton(Build);
            builder.Services.AddSingleton<IBatchingHealthContributor>(sp => (sp.GetRequiredService<IGenerationProcessor<TPrompt, TToken>>() as IBatchingHealthContributor)!);
        }
        else
        {
            builder.Services.AddKeyedSingleton(key, (sp, _) => Build(sp));
            builder.Services.AddSingleton<IBatchingHealthContributor>(sp => (sp.GetRequiredKeyedService<IGenerationProcessor<TPrompt, TToken>>(key) as IBatchingHealthContributor)!);
        }

        return builder;
    }
}
