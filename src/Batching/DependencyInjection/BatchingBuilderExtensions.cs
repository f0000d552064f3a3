using Batching;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>
/// Registers <see cref="IBatchProcessor{TIn, TOut}"/> singletons. Each processor's <see cref="BatchingOptions"/> are
/// named options (see <see cref="OptionsName{TIn, TOut}"/>), so they can also be configured or bound elsewhere with
/// <c>services.Configure&lt;BatchingOptions&gt;(name, ...)</c>. Options are validated when the processor is first
/// resolved; an invalid setting throws <see cref="ArgumentException"/> naming it.
/// </summary>
public static class BatchingBuilderExtensions
{
    /// <summary>Registers a singleton <see cref="IBatchProcessor{TIn, TOut}"/> that runs <paramref name="handler"/>.</summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="handler">Fills <c>outputs[i]</c> for <c>inputs[i]</c>.</param>
    /// <param name="configure">Sets options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddProcessor<TIn, TOut>(this IBatchingBuilder builder, BatchHandler<TIn, TOut> handler, Action<BatchingOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        return builder.AddProcessor<TIn, TOut>(_ => handler, configure);
    }

    /// <summary>Registers a singleton <see cref="IBatchProcessor{TIn, TOut}"/> whose handler is created from the container.</summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="handlerFactory">Creates the handler once, when the processor is built.</param>
    /// <param name="configure">Sets options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddProcessor<TIn, TOut>(this IBatchingBuilder builder, Func<IServiceProvider, BatchHandler<TIn, TOut>> handlerFactory, Action<BatchingOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handlerFactory);
        return builder.AddCustomProcessor<TIn, TOut, IBatchProcessor<TIn, TOut>>(null, context => BuildEngine(context, handlerFactory), configure);
    }

    /// <summary>Registers a singleton <see cref="IBatchProcessor{TIn, TOut}"/> whose handler is the container's <typeparamref name="THandler"/>
    /// (registered as a singleton if it is not registered yet).</summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <typeparam name="THandler">The handler type.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="configure">Sets options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddProcessor<TIn, TOut, THandler>(this IBatchingBuilder builder, Action<BatchingOptions>? configure = null)
        where THandler : class, IBatchHandler<TIn, TOut>
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.TryAddSingleton<THandler>();
        return builder.AddProcessor<TIn, TOut>(sp => sp.GetRequiredService<THandler>().HandleAsync, configure);
    }

    /// <summary>Registers a keyed singleton <see cref="IBatchProcessor{TIn, TOut}"/>, so one app can host several processors of the same types.
    /// Resolve it with <c>[FromKeyedServices(name)]</c> or <c>GetRequiredKeyedService</c>.</summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The service key, also the processor's name in logs and metrics.</param>
    /// <param name="handler">Fills <c>outputs[i]</c> for <c>inputs[i]</c>.</param>
    /// <param name="configure">Sets options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddKeyedProcessor<TIn, TOut>(this IBatchingBuilder builder, string name, BatchHandler<TIn, TOut> handler, Action<BatchingOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handler);
        return builder.AddKeyedProcessor<TIn, TOut>(name, _ => handler, configure);
    }

    /// <summary>Registers a keyed singleton <see cref="IBatchProcessor{TIn, TOut}"/> whose handler is created from the container.</summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The service key, also the processor's name in logs and metrics.</param>
    /// <param name="handlerFactory">Creates the handler once, when the processor is built.</param>
    /// <param name="configure">Sets options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddKeyedProcessor<TIn, TOut>(this IBatchingBuilder builder, string name, Func<IServiceProvider, BatchHandler<TIn, TOut>> handlerFactory, Action<BatchingOptions>? configure = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(handlerFactory);
        return builder.AddCustomProcessor<TIn, TOut, IBatchProcessor<TIn, TOut>>(name, context => BuildEngine(context, handlerFactory), configure);
    }

    /// <summary>Registers a keyed singleton <see cref="IBatchProcessor{TIn, TOut}"/> whose handler is the container's <typeparamref name="THandler"/>.</summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <typeparam name="THandler">The handler type.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The service key, also the processor's name in logs and metrics.</param>
    /// <param name="configure">Sets options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddKeyedProcessor<TIn, TOut, THandler>(this IBatchingBuilder builder, string name, Action<BatchingOptions>? configure = null)
        where THandler : class, IBatchHandler<TIn, TOut>
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.TryAddSingleton<THandler>();
        return builder.AddKeyedProcessor<TIn, TOut>(name, sp => sp.GetRequiredService<THandler>().HandleAsync, configure);
    }

    /// <summary>
    /// The name of the <see cref="BatchingOptions"/> a processor registered here uses: the key for a keyed
    /// processor, else <c>"Batching:{TIn}->{TOut}"</c> with the types' full names.
    /// </summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <param name="key">The processor's key, or <see langword="null"/> for an unkeyed processor.</param>
    /// <returns>The options name.</returns>
    public static string OptionsName<TIn, TOut>(string? key) =>
        key ?? $"Batching:{typeof(TIn).FullName}->{typeof(TOut).FullName}";

    /// <summary>
    /// Registers a processor that <paramref name="factory"/> builds: the one registration path every processor takes,
    /// for backends and integrations that wrap the engine in a processor of their own (the GPU package does). The
    /// processor is a singleton (keyed when <paramref name="key"/> is given) of <typeparamref name="TProcessor"/> and of
    /// <see cref="IBatchProcessor{TIn, TOut}"/>, built when first resolved, disposed with the container, and reported
    /// by <see cref="BatchingHealthCheck"/> when it implements <see cref="IBatchingHealthContributor"/>. Its
    /// <see cref="BatchingOptions"/> are the named options <see cref="OptionsName{TIn, TOut}"/>.
    /// </summary>
    /// <typeparam name="TIn">The type of one input item.</typeparam>
    /// <typeparam name="TOut">The type of one output item.</typeparam>
    /// <typeparam name="TProcessor">The processor's type, <see cref="IBatchProcessor{TIn, TOut}"/> or a type derived from it.</typeparam>
    /// <param name="builder">The builder.</param>
    /// <param name="key">The service key, also the processor's default name; <see langword="null"/> for an unkeyed processor.</param>
    /// <param name="factory">Builds the processor from the resolved options, typically with <see cref="BatchProcessor.Create{TIn, TOut}(BatchHandler{TIn, TOut}, BatchProcessorContext)"/>.</param>
    /// <param name="configure">Sets options; <see langword="null"/> for the defaults.</param>
    /// <returns>The builder, for chaining.</returns>
    public static IBatchingBuilder AddCustomProcessor<TIn, TOut, TProcessor>(this IBatchingBuilder builder, string? key,
        Func<BatchProcessorContext, TProcessor> factory, Action<BatchingOptions>? configure = null)
        where TProcessor : class, IBatchProcessor<TIn, TOut>
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(factory);
        if (key is not null)
        {
            ArgumentException.ThrowIfNullOrEmpty(key);
        }

        string optionsName = OptionsName<TIn, TOut>(key);
        OptionsBuilder<BatchingOptions> options = builder.Services.AddOptions<BatchingOptions>(optionsName);
        if (configure is not null)
        {
            options.Configure(configure);
        }

        TProcessor Build(IServiceProvider services)
        {
            // A copy: the monitor's instance is shared and must not be changed by building a processor from it.
            BatchingOptions settings = services.GetRequiredService<IOptionsMonitor<BatchingOptions>>().Get(optionsName).Clone();
            settings.TimeProvider ??= services.GetService<TimeProvider>();
            if (string.IsNullOrEmpty(settings.Name))
            {
                settings.Name = key;
            }

            return factory(new BatchProcessorContext(services, optionsName, key, settings))
                ?? throw new InvalidOperationException($"The factory of batch processor '{settings.Name ?? optionsName}' returned null.");
        }

        bool alias = typeof(TProcessor) != typeof(IBatchProcessor<TIn, TOut>);
        if (key is null)
        {
            builder.Services.AddSingleton(Build);
            if (alias)
            {
                builder.Services.AddSingleton<IBatchProcessor<TIn, TOut>>(sp => sp.GetRequiredService<TProcessor>());
            }

            builder.Services.AddSingleton<IBatchingHealthContributor>(sp => (sp.GetRequiredService<TProcessor>() as IBatchingHealthContributor)!);
        }
        else
        {
            builder.Services.AddKeyedSingleton(key, (sp, _) => Build(sp));
            if (alias)
            {
                builder.Services.AddKeyedSingleton<IBatchProcessor<TIn, TOut>>(key, (sp, k) => sp.GetRequiredKeyedService<TProcessor>(k));
            }

            builder.Services.AddSingleton<IBatchingHealthContributor>(sp => (sp.GetRequiredKeyedService<TProcessor>(key) as IBatchingHealthContributor)!);
        }

        return builder;
    }

    private static IBatchProcessor<TIn, TOut> BuildEngine<TIn, TOut>(BatchProcessorContext context, Func<IServiceProvider, BatchHandler<TIn, TOut>> handlerFactory)
    {
        if (context.Key is null && string.IsNullOrEmpty(context.Options.Name))
        {
            context.Options.Name = $"{typeof(TIn).Name}->{typeof(TOut).Name}";
        }

        BatchHandler<TIn, TOut> handler = handlerFactory(context.Services)
            ?? throw new InvalidOperationException($"The handler factory for batch processor '{context.Options.Name}' returned null.");
        return BatchProcessor.Create(handler, context);
    }
}
