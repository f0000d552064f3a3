using System.Buffers.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Batching.Samples.WebApi;

/// <summary>
/// The body of <c>POST /v1/infer</c>: one feature vector (<c>"features": [0.1, ...]</c>) or several
/// (<c>"features": [[0.1, ...], [0.2, ...]]</c>, processed as one multi-item call), with an optional priority level
/// (0, the default, is the most urgent) and an optional queue timeout in milliseconds.
/// </summary>
public sealed record InferRequest(
    Features? Features,
    int? Priority = null,
    [property: JsonPropertyName("timeout_ms")] double? TimeoutMs = null);

/// <summary>The answer to one vector: the model's output vector for it.</summary>
public sealed record InferResponse(float[] Outputs);

/// <summary>The answer to several vectors: <c>Outputs[i]</c> is the output for <c>features[i]</c>.</summary>
public sealed record InferManyResponse(float[][] Outputs);

/// <summary>
/// The <c>features</c> field: a vector of numbers, or an array of such vectors (<see cref="IsMany"/>). An empty array
/// <c>[]</c> reads as one vector of no numbers (and fails the width check).
/// </summary>
[JsonConverter(typeof(FeaturesJsonConverter))]
public sealed class Features
{
    public Features(float[] vector)
    {
        Vectors = [vector];
    }

    public Features(float[][] vectors)
    {
        Vectors = vectors;
        IsMany = true;
    }

    /// <summary>The vectors: one unless <see cref="IsMany"/>.</summary>
    public float[][] Vectors { get; }

    /// <summary>Whether the field held an array of vectors (so the response holds an array of outputs).</summary>
    public bool IsMany { get; }
}

/// <summary>Reads <c>[n, ...]</c> or <c>[[n, ...], ...]</c>. Anything else throws a <see cref="JsonException"/> without a
/// message, so the serializer writes one naming the path (<c>$.features</c>) and the line and byte.</summary>
internal sealed class FeaturesJsonConverter : JsonConverter<Features>
{
    public override Features Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartArray || !reader.Read())
        {
            throw new JsonException();
        }

        bool strings = (options.NumberHandling & JsonNumberHandling.AllowReadingFromString) != 0;
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            return new Features(ReadVector(ref reader, strings));
        }

        var vectors = new List<float[]>();
        while (reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartArray || !reader.Read())
            {
                throw new JsonException();
            }

            vectors.Add(ReadVector(ref reader, strings));
            reader.Read();
        }

        return new Features([.. vectors]);
    }

    public override void Write(Utf8JsonWriter writer, Features value, JsonSerializerOptions options)
    {
        if (value.IsMany)
        {
            writer.WriteStartArray();
        }

        foreach (float[] vector in value.Vectors)
        {
            writer.WriteStartArray();
            foreach (float f in vector)
            {
                writer.WriteNumberValue(f);
            }

            writer.WriteEndArray();
        }

        if (value.IsMany)
        {
            writer.WriteEndArray();
        }
    }

    /// <summary>From the first element (or the closing bracket) to the closing bracket, which it leaves current. Numbers
    /// written as strings ("0.5") are read where the options allow it, as the serializer's own float[] reader does.</summary>
    private static float[] ReadVector(ref Utf8JsonReader reader, bool strings)
    {
        var vector = new List<float>();
        while (reader.TokenType != JsonTokenType.EndArray)
        {
            vector.Add(reader.TokenType switch
            {
                JsonTokenType.Number => reader.GetSingle(),
                JsonTokenType.String when strings && !reader.HasValueSequence && !reader.ValueIsEscaped
                    && Utf8Parser.TryParse(reader.ValueSpan, out float value, out int used) && used == reader.ValueSpan.Length => value,
                _ => throw new JsonException(),
            });
            reader.Read();
        }

        return [.. vector];
    }
}

// Unknown properties are rejected so a typo such as "feature" is named in the 400 instead of reading as a missing field.
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(InferRequest))]
[JsonSerializable(typeof(InferResponse))]
[JsonSerializable(typeof(InferManyResponse))]
internal sealed partial class AppJson : JsonSerializerContext;
