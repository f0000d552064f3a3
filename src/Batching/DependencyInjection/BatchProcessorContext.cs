using System.Diagnostics.Metrics;
using Batching;
using Microsoft.Extensions.Logging;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>
/// What a processor factory registered with
/// <see cref="BatchingBuilderExtensions.AddCustomProcessor{TIn, TOut, TProcessor}"/> receives: the container, and the
/// processor's options already resolved from it. Backends (such as the GPU package) build their processors from it,
/// so that every processor in a container is named, configured, logged, measured and timed the same way.
/// </summary>
public sealed class BatchProcessorContext
{
    internal BatchProcessorContext(IServiceProvider services, string optionsName, string? key, BatchingOptions options)
    {
        Services = services;
        OptionsName = optionsName;
        Key = key;
        Options = options;
    }

    /// <summary>The container the processor is resolved from.</summary>
    public IServiceProvider Services { get; }

    /// <summary>The name of the processor's named options (see <see cref="BatchingBuilderExtensions.OptionsName{TIn, TOut}"/>);
    /// a backend's own named options use the same name.</summary>
    public string OptionsName { get; }

    /// <summary>The service key of a keyed processor, else <see langword="null"/>.</summary>
    public string? Key { get; }

    /// <summary>
    /// A copy of the processor's named <see cref="BatchingOptions"/> (changing it affects no other processor), with
    /// <see cref="BatchingOptions.TimeProvider"/> set to the container's when the options named none, and
    /// <see cref="BatchingOptions.Name"/> set to the key when the options named none. Not yet validated: building the
    /// processor validates it.
    /// </summary>
    public BatchingOptions Options { get; }

    /// <summary>The container's logger factory, if it has one.</summary>
    public ILoggerFactory? LoggerFactory => Services.GetService<ILoggerFactory>();

    /// <summary>The container's meter factory, if it has one.</summary>
    public IMeterFactory? MeterFactory => Services.GetService<IMeterFactory>();
}
