using System.Text.Json;
using System.Text.Json.Serialization;

namespace Batching.Samples.EmbeddingService;

/// <summary>
/// The body of <c>POST /v1/embeddings</c>, as OpenAI defines it: <c>input</c> is one string or an array of strings
/// (token arrays are not accepted), <c>model</c> names the model, <c>encoding_format</c> is <c>float</c> (the default)
/// or <c>base64</c> (little-endian float32, what the official clients ask for), <c>dimensions</c> may only repeat the
/// model's own. <c>user</c> is accepted and ignored.
/// </summary>
public sealed record EmbeddingsRequest(
    JsonElement Input,
    string? Model = null,
    [property: JsonPropertyName("encoding_format")] string? EncodingFormat = null,
    int? Dimensions = null,
    string? User = null);

// Unknown properties are rejected so a typo such as "inputs" is named in the 400 instead of reading as a missing field.
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(EmbeddingsRequest))]
internal sealed partial class AppJson : JsonSerializerContext;
