using System.Diagnostics.Metrics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;

namespace Batching.Extensions.AI.Internal;

/// <summary>One embedding of a batch, with the usage of the inner call that made it and its position in that call.</summary>
internal readonly record struct EmbeddingSlot<TEmbedding>(TEmbedding Embedding, BatchUsage? Usage, int Position);

/// <summary>
/// The middleware behind <c>UseBatching</c>: one batch processor per distinct <see cref="PartitionKey"/>, each calling the
/// inner generator with the options of the partition's first caller.
/// </summary>
internal sealed class BatchingEmbeddingGenerator<TInput, TEmbedding> : DelegatingEmbeddingGenerator<TInput, TEmbedding>,
    IAsyncDisposable, IBatchingHealthContributor
    where TEmbedding : Embedding
{
    private readonly BatchingOptions _options;
    private readonly ILoggerFactory? _loggerFactory;
    private readonly IMeterFactory? _meterFactory;
    private readonly Lock _sync = new();
    // Copy-on-write: lookups on the hot path read the current dictionary without a lock.
    private volatile Dictionary<PartitionKey, Partition> _partitions = new();
    private Partition? _default;
    private bool _disposed;

    public BatchingEmbeddingGenerator(IEmbeddingGenerator<TInput, TEmbedding> inner, BatchingOptions options,
        ILoggerFactory? loggerFactory, IMeterFactory? meterFactory)
        : base(inner)
    {
        _options = options.Clone();
        _options.OutputCheck = OutputCheck.None;
        _loggerFactory = loggerFactory;
        _meterFactory = meterFactory;
        Name = string.IsNullOrEmpty(_options.Name) ? NameFromMetadata(inner) : _options.Name;
    }

    /// <summary>The base name of the partitions' processors.</summary>
    public string Name { get; }

    /// <summary>The partitions created so far, for tests and health.</summary>
    internal IReadOnlyCollection<Partition> Partitions => _partitions.Values;

    public static void ValidateOptions(BatchingOptions options)
    {
        if (options.ItemWeight is not null and not Func<TInput, int>)
        {
            throw new ArgumentException(
                $"BatchingOptions.ItemWeight must be a Func<{typeof(TInput).Name}, int> for this generator's input type; it was {options.ItemWeight.GetType()}.",
                nameof(BatchingOptions.ItemWeight));
        }

        options.Clone().Validate();
    }

    public override async Task<GeneratedEmbeddings<TEmbedding>> GenerateAsync(IEnumerable<TInput> values,
        EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(values);
        TInput[] inputs = [.. values];
        if (inputs.Length == 0)
        {
            return [];
        }

        Partition? partition = GetPartition(options);
        if (partition is null)
        {
            // Past MaxPartitions: served, unbatched, rather than refused.
            return await base.GenerateAsync(inputs, options, cancellationToken).ConfigureAwait(false);
        }

        var slots = new EmbeddingSlot<TEmbedding>[inputs.Length];
        await partition.Processor.ProcessManyAsync(inputs, slots, default, cancellationToken).ConfigureAwait(false);
        var result = new GeneratedEmbeddings<TEmbedding>(slots.Length);
        var usage = default(UsageAccumulator);
        foreach (EmbeddingSlot<TEmbedding> slot in slots)
        {
            result.Add(slot.Embedding);
            usage.Add(slot.Usage, slot.Position);
        }

        result.Usage = usage.Result();
        return result;
    }

    public override object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        return serviceKey is null && serviceType == typeof(IBatchingHealthContributor) ? this : base.GetService(serviceType, serviceKey);
    }

    public HealthCheckResult CheckHealth()
    {
        Partition[] partitions = [.. _partitions.Values];
        if (partitions.Length == 0)
        {
            return _disposed
                ? HealthCheckResult.Unhealthy($"Embedding generator '{Name}' was disposed.")
                : HealthCheckResult.Healthy($"Embedding generator '{Name}': no calls yet.");
        }

        HealthStatus worst = HealthStatus.Healthy;
        var descriptions = new List<string>(partitions.Length);
        foreach (Partition partition in partitions)
        {
            HealthCheckResult result = ((IBatchingHealthContributor)partition.Processor).CheckHealth();
            worst = result.Status < worst ? result.Status : worst;
            descriptions.Add(result.Description ?? partition.Name);
        }

        return new HealthCheckResult(worst, string.Join(" ", descriptions));
    }

    public async ValueTask DisposeAsync()
    {
        Partition[] partitions;
        lock (_sync)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            partitions = [.. _partitions.Values];
        }

        foreach (Partition partition in partitions)
        {
            await partition.Processor.DisposeAsync().ConfigureAwait(false);
        }

        base.Dispose(true);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            // Drains queued calls (up to ShutdownTimeout) before the inner generator goes.
            DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private Partition? GetPartition(EmbeddingGenerationOptions? options)
    {
        if (options is null && _default is { } known)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return known;
        }

        var key = PartitionKey.From(options);
        if (_partitions.TryGetValue(key, out Partition? partition))
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return partition;
        }

        lock (_sync)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_partitions.TryGetValue(key, out partition))
            {
                return partition;
            }

            if (_partitions.Count >= BatchingEmbeddingGeneratorBuilderExtensions.MaxPartitions)
            {
                return null;
            }

            partition = new Partition(this, key, options?.Clone(), _partitions.Count);
            _partitions = new Dictionary<PartitionKey, Partition>(_partitions) { [key] = partition };
            if (ReferenceEquals(key, PartitionKey.Default))
            {
                _default = partition;
            }

            return partition;
        }
    }

    private async ValueTask HandleAsync(Partition partition, ReadOnlyMemory<TInput> inputs, Memory<EmbeddingSlot<TEmbedding>> outputs,
        CancellationToken cancellationToken)
    {
        // A copy: the batch's buffer is reused once the handler returns, and an inner generator may keep the enumerable.
        TInput[] values = inputs.ToArray();
        GeneratedEmbeddings<TEmbedding> generated = await InnerGenerator.GenerateAsync(values, partition.InnerOptions, cancellationToken)
            .ConfigureAwait(false) ?? throw new InvalidOperationException($"The inner generator of '{partition.Name}' returned null.");
        if (generated.Count != values.Length)
        {
            throw new InvalidOperationException(
                $"The inner generator of '{partition.Name}' returned {generated.Count} embedding(s) for {values.Length} value(s).");
        }

        BatchUsage? usage = generated.Usage is { } details ? new BatchUsage(details, values.Length) : null;
        Span<EmbeddingSlot<TEmbedding>> slots = outputs.Span;
        for (int i = 0; i < slots.Length; i++)
        {
            slots[i] = new EmbeddingSlot<TEmbedding>(
                generated[i] ?? throw new InvalidOperationException($"The inner generator of '{partition.Name}' returned a null embedding at index {i}."),
                usage, i);
        }
    }

    private static string NameFromMetadata(IEmbeddingGenerator<TInput, TEmbedding> inner)
    {
        EmbeddingGeneratorMetadata? metadata = inner.GetService<EmbeddingGeneratorMetadata>();
        string provider = metadata?.ProviderName is { Length: > 0 } p ? p : inner.GetType().Name;
        return metadata?.DefaultModelId is { Length: > 0 } model ? $"{provider}/{model}" : provider;
    }

    /// <summary>The processor of one distinct set of options.</summary>
    internal sealed class Partition
    {
        public Partition(BatchingEmbeddingGenerator<TInput, TEmbedding> owner, PartitionKey key, EmbeddingGenerationOptions? innerOptions, int index)
        {
            Key = key;
            InnerOptions = innerOptions;
            Name = PartitionName(owner.Name, key, index);
            BatchingOptions settings = owner._options.Clone();
            settings.Name = Name;
            Processor = BatchProcessor.Create<TInput, EmbeddingSlot<TEmbedding>>(
                (inputs, outputs, ct) => owner.HandleAsync(this, inputs, outputs, ct), settings, owner._loggerFactory, owner._meterFactory);
        }

        public PartitionKey Key { get; }

        public EmbeddingGenerationOptions? InnerOptions { get; }

        public string Name { get; }

        public IBatchProcessor<TInput, EmbeddingSlot<TEmbedding>> Processor { get; }

        private static string PartitionName(string name, PartitionKey key, int index)
        {
            if (ReferenceEquals(key, PartitionKey.Default))
            {
                return name;
            }

            string model = key.ModelId is null ? "" : $" model={key.ModelId}";
            string dimensions = key.Dimensions is null ? "" : $" dimensions={key.Dimensions}";
            string extras = key.HasExtras ? $" #{index}" : "";
            return $"{name} [{(model + dimensions + extras).TrimStart()}]";
        }
    }
}
