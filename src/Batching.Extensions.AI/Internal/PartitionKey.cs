using Microsoft.Extensions.AI;

namespace Batching.Extensions.AI.Internal;

/// <summary>
/// What makes two calls' <see cref="EmbeddingGenerationOptions"/> batchable together. Erring towards "different" is
/// safe (calls are only batched less); erring towards "equal" would send a caller's values with another's options, so
/// values are compared with <see cref="object.Equals(object?)"/> and delegates by delegate equality, never by text.
/// </summary>
internal sealed class PartitionKey : IEquatable<PartitionKey>
{
    public static readonly PartitionKey Default = new(null, null, null, []);

    private readonly KeyValuePair<string, object?>[] _properties;
    private readonly int _hash;

    private PartitionKey(string? modelId, int? dimensions, Delegate? rawFactory, KeyValuePair<string, object?>[] properties)
    {
        ModelId = modelId;
        Dimensions = dimensions;
        RawFactory = rawFactory;
        _properties = properties;
        var hash = new HashCode();
        hash.Add(modelId, StringComparer.Ordinal);
        hash.Add(dimensions);
        hash.Add(rawFactory);
        foreach (KeyValuePair<string, object?> property in properties)
        {
            hash.Add(property.Key, StringComparer.Ordinal);
            hash.Add(property.Value);
        }

        _hash = hash.ToHashCode();
    }

    public string? ModelId { get; }

    public int? Dimensions { get; }

    public Delegate? RawFactory { get; }

    public bool HasExtras => RawFactory is not null || _properties.Length > 0;

    public static PartitionKey From(EmbeddingGenerationOptions? options)
    {
        if (options is null || (options.ModelId is null && options.Dimensions is null && options.RawRepresentationFactory is null
            && (options.AdditionalProperties is null || options.AdditionalProperties.Count == 0)))
        {
            return Default;
        }

        KeyValuePair<string, object?>[] properties = options.AdditionalProperties is { Count: > 0 } additional
            ? [.. additional.OrderBy(p => p.Key, StringComparer.Ordinal)]
            : [];
        return new PartitionKey(options.ModelId, options.Dimensions, options.RawRepresentationFactory, properties);
    }

    public bool Equals(PartitionKey? other)
    {
        if (ReferenceEquals(this, other))
        {
            return true;
        }

        if (other is null || _hash != other._hash || !string.Equals(ModelId, other.ModelId, StringComparison.Ordinal)
            || Dimensions != other.Dimensions || !Equals(RawFactory, other.RawFactory) || _properties.Length != other._properties.Length)
        {
            return false;
        }

        for (int i = 0; i < _properties.Length; i++)
        {
            if (!string.Equals(_properties[i].Key, other._properties[i].Key, StringComparison.Ordinal) || !Equals(_properties[i].Value, other._properties[i].Value))
            {
                return false;
            }
        }

        return true;
    }

    public override bool Equals(object? obj) => Equals(obj as PartitionKey);

    public override int GetHashCode() => _hash;
}
