using Microsoft.Extensions.AI;

namespace Batching.Samples.EmbeddingService.Model;

/// <summary>
/// <see cref="MiniLmModel"/> as a Microsoft.Extensions.AI generator: one model run per call, whatever its size, so
/// whoever is in front of it (<c>UseBatching()</c>, or nothing) decides the batches. Synchronous: the call returns once
/// the run is done, on the caller's thread.
/// </summary>
internal sealed class MiniLmEmbeddingGenerator(MiniLmModel model, TimeProvider? time = null) : IEmbeddingGenerator<string, Embedding<float>>
{
    public const string ProviderName = "onnxruntime";

    private readonly EmbeddingGeneratorMetadata _metadata = new(ProviderName, defaultModelId: MiniLmModel.ModelId,
        defaultModelDimensions: MiniLmModel.Dimensions);

    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(values);
        cancellationToken.ThrowIfCancellationRequested();
        if (options?.ModelId is { } id && !IsServed(id))
        {
            throw new ArgumentException($"This generator serves '{MiniLmModel.ModelId}'; the options asked for '{id}'.", nameof(options));
        }

        if (options?.Dimensions is { } dimensions && dimensions != MiniLmModel.Dimensions)
        {
            throw new ArgumentException($"{MiniLmModel.ModelId} makes {MiniLmModel.Dimensions}-dimension vectors; the options asked for {dimensions}.", nameof(options));
        }

        string[] texts = values as string[] ?? [.. values];
        if (texts.Length == 0)
        {
            return Task.FromResult(new GeneratedEmbeddings<Embedding<float>>());
        }

        (float[][] vectors, int tokens) = model.Embed(texts, cancellationToken);
        DateTimeOffset created = _time.GetUtcNow();
        var result = new GeneratedEmbeddings<Embedding<float>>(vectors.Length)
        {
            Usage = new UsageDetails { InputTokenCount = tokens, TotalTokenCount = tokens },
        };
        foreach (float[] vector in vectors)
        {
            result.Add(new Embedding<float>(vector) { ModelId = MiniLmModel.ModelId, CreatedAt = created });
        }

        return Task.FromResult(result);
    }

    /// <summary>Whether <paramref name="modelId"/> names this model (its short name or its Hugging Face name).</summary>
    public static bool IsServed(string modelId) =>
        modelId is MiniLmModel.ModelId or "sentence-transformers/" + MiniLmModel.ModelId;

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        return serviceKey is not null ? null
            : serviceType == typeof(EmbeddingGeneratorMetadata) ? _metadata
            : serviceType.IsInstanceOfType(this) ? this
            : serviceType == typeof(MiniLmModel) ? model
            : null;
    }

    // The model belongs to whoever made it (the container, in the app).
    public void Dispose()
    {
    }
}
