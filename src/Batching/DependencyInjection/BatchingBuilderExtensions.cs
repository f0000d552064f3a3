using System.Diagnostics.Metrics;
using Batching;
using Microsoft.Extensions.Logging;
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
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(handlerFactory);
        string name = OptionsName<TIn, TOut>(null);
        Configure(builder, name, configure);
        builder.Services.AddSingleton(sp => Build(sp, name, handlerFactory));
        builder.Services.AddSingleton<IBatchingHealthContributor>(sp => (sp.GetRequiredService<IBatchProcessor<TIn, TOut>>() as IBatchingHealthContributor)!);
        return builder;
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
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(handlerFactory);
        string optionsName = OptionsName<TIn, TOut>(name);
        Configure(builder, optionsName, configure);
        builder.Services.AddKeyedSingleton(name, (sp, _) => Build(sp, optionsName, handlerFactory));
        builder.Services.AddSingleton<IBatchingHealthContributor>(sp => (sp.GetRequiredKeyedService<IBatchProcessor<TIn, TOut>>(name) as IBatchingHealthContributor)!);
        return builder;
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

    private static void Configure(IBatchingBuilder builder, string optionsName, Action<BatchingOptions>? configure)
    {
        OptionsBuilder<BatchingOptions> options = builder.Services.AddOptions<BatchingOptions>(optionsName);
        if (configure is not null)
        {
            options.Configure(configure);
        }
    }

    private static IBatchProcessor<TIn, TOut> Build<TIn, TOut>(IServiceProvider services, string optionsName, Func<IServiceProvider, BatchHandler<TIn, TOut>> handlerFactory)
    {
        // A copy: the monitor's instance is shared and must not be changed by building a processor from it.
        BatchingOptions options = services.GetRequiredService<IOptionsMonitor<BatchingOptions>>().Get(optionsName).Clone();
        if (string.IsNullOrEmpty(options.Name))
        {
            options.Name = optionsName.StartsWith("Batching:", StringComparison.Ordinal) ? $"{typeof(TIn).Name}->{typeof(TOut).Name}" : optionsName;
        }

        BatchHandler<TIn, TOut> handler = handlerFactory(services)
            ?? throw new InvalidOperationException($"The handler factory for batch processor '{options.Name}' returned null.");
        return BatchProcessor.CreateEngine(handler, options, services.GetService<TimeProvider>(), services.GetService<ILoggerFactory>(), services.GetService<IMeterFactory>());
    }
}
