namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers batch processors; returned by <see cref="BatchingServiceCollectionExtensions.AddBatching"/>.</summary>
public interface IBatchingBuilder
{
    /// <summary>The service collection processors are registered in.</summary>
    IServiceCollection Services { get; }
}

internal sealed class BatchingBuilder(IServiceCollection services) : IBatchingBuilder
{
    public IServiceCollection Services { get; } = services;
}
