using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds batching to a service collection.</summary>
public static class BatchingServiceCollectionExtensions
{
    /// <summary>
    /// Adds the batching services and returns a builder to register processors with. Registers
    /// <see cref="TimeProvider.System"/> unless a <see cref="TimeProvider"/> is already registered, so tests can
    /// substitute fake time.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <returns>A builder for <c>AddProcessor</c> calls.</returns>
    public static IBatchingBuilder AddBatching(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.TryAddSingleton(TimeProvider.System);
        services.AddOptions();
        services.TryAddSingleton<Batching.BatchingHealthCheck>();
        return new BatchingBuilder(services);
    }
}
