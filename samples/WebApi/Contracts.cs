using System.Text.Json;
using System.Text.Json.Serialization;

namespace Batching.Samples.WebApi;

/// <summary>The body of <c>POST /v1/infer</c>: one feature vector.</summary>
public sealed record InferRequest(float[]? Features);

/// <summary>The answer: the model's output vector for that one item.</summary>
public sealed record InferResponse(float[] Outputs);

// Unknown properties are rejected so a typo such as "feature" is named in the 400 instead of reading as a missing field.
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(InferRequest))]
[JsonSerializable(typeof(InferResponse))]
internal sealed partial class AppJson : JsonSerializerContext;
