using System.Buffers;
using System.Runtime.InteropServices;
using System.Text.Json;
using Batching.Samples.EmbeddingService.Model;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.AI;

namespace Batching.Samples.EmbeddingService;

/// <summary>
/// OpenAI's <c>POST /v1/embeddings</c> over the app's <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/> pipeline:
/// validates the body (naming the field at fault), makes one <c>GenerateAsync</c> call for all the request's inputs,
/// and maps the pipeline's failures to HTTP.
/// </summary>
/// <summary>The most inputs one request may carry here: <see cref="EmbeddingsEndpoint.MaxInputs"/>, or the queue's capacity if smaller.</summary>
internal sealed record EmbeddingsLimits(int MaxInputs);

internal static class EmbeddingsEndpoint
{
    /// <summary>The most inputs one request may carry: two full batches of the default processor. Clients with more
    /// send more requests, which other instances can serve.</summary>
    public const int MaxInputs = 128;

    /// <summary>Far above a valid body (<see cref="MaxInputs"/> texts of 256 tokens are well under 1 MB of JSON).</summary>
    public const int MaxBodyBytes = 4 << 20;

    public static async Task<IResult> HandleAsync(HttpContext context, IEmbeddingGenerator<string, Embedding<float>> generator, MiniLmModel model,
        EmbeddingsLimits limits, ILoggerFactory logs)
    {
        if (!context.Request.HasJsonContentType())
        {
            return Problem(StatusCodes.Status415UnsupportedMediaType, "Unsupported media type",
                $"Send the body as JSON with 'Content-Type: application/json'; it was '{context.Request.ContentType ?? "(none)"}'.");
        }

        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = MaxBodyBytes;
        }

        EmbeddingsRequest? request;
        try
        {
            request = await JsonSerializer.DeserializeAsync(context.Request.Body, AppJson.Default.EmbeddingsRequest, context.RequestAborted);
        }
        catch (JsonException ex)
        {
            return Problem(StatusCodes.Status400BadRequest, "Malformed JSON", ex.Message);
        }
        catch (BadHttpRequestException ex)
        {
            return Problem(ex.StatusCode, "Bad request", ex.Message);
        }

        if (Validate(request, model, limits.MaxInputs, out string[] inputs, out bool base64) is { } invalid)
        {
            return invalid;
        }

        try
        {
            // RequestAborted: a client that disconnects takes its inputs out of the queue (or out of their running batches).
            // No options: the model was checked above, so every request shares one batching partition.
            GeneratedEmbeddings<Embedding<float>> embeddings = await generator.GenerateAsync(inputs, cancellationToken: context.RequestAborted);
            return new EmbeddingsResult(embeddings, base64);
        }
        catch (Exception ex) when (ServiceResponses.Handles(ex, context))
        {
            return ServiceResponses.Problem(ex, context, "Embedding");
        }
        catch (BatchExecutionException ex)
        {
            logs.CreateLogger(typeof(EmbeddingsEndpoint)).LogWarning(ex, "Embedding failed for a batch of {BatchSize} input(s).", ex.BatchSize);
            return Problem(StatusCodes.Status500InternalServerError, "Embedding failed", "The model failed on the batch carrying this request's inputs.");
        }
    }

    /// <summary>The 400 for the first problem with the request, naming its field; <see langword="null"/> when it is valid.</summary>
    private static IResult? Validate(EmbeddingsRequest? request, MiniLmModel model, int maxInputs, out string[] inputs, out bool base64)
    {
        inputs = [];
        base64 = false;
        if (request is null || request.Input.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null)
        {
            return Problem(StatusCodes.Status400BadRequest, "Missing input", "The body must be an object with an 'input' string or array of strings.");
        }

        if (request.Model is { } name && !MiniLmEmbeddingGenerator.IsServed(name))
        {
            return Problem(StatusCodes.Status400BadRequest, "Unknown model", $"'model' must be '{MiniLmModel.ModelId}', the model this service runs; it was '{name}'.");
        }

        if (request.Dimensions is { } dimensions && dimensions != MiniLmModel.Dimensions)
        {
            return Problem(StatusCodes.Status400BadRequest, "Dimensions not supported",
                $"'dimensions' may only be {MiniLmModel.Dimensions} for {MiniLmModel.ModelId}; it was {dimensions}.");
        }

        switch (request.EncodingFormat)
        {
            case null or "float":
                break;
            case "base64":
                base64 = true;
                break;
            default:
                return Problem(StatusCodes.Status400BadRequest, "Unknown encoding_format", $"'encoding_format' must be 'float' or 'base64'; it was '{request.EncodingFormat}'.");
        }

        JsonElement input = request.Input;
        bool many = input.ValueKind == JsonValueKind.Array;
        if (many)
        {
            int count = input.GetArrayLength();
            if (count == 0)
            {
                return Problem(StatusCodes.Status400BadRequest, "Empty input", "'input' must hold at least one string; it was an empty array.");
            }

            if (count > maxInputs)
            {
                return Problem(StatusCodes.Status400BadRequest, "Too many inputs", $"'input' may hold at most {maxInputs} strings in one request; it held {count}.");
            }

            inputs = new string[count];
            int i = 0;
            foreach (JsonElement item in input.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.String)
                {
                    return Problem(StatusCodes.Status400BadRequest, "Input not a string",
                        $"'input[{i}]' must be a string (token arrays are not accepted); it was {Describe(item.ValueKind)}.");
                }

                inputs[i++] = item.GetString()!;
            }
        }
        else if (input.ValueKind == JsonValueKind.String)
        {
            inputs = [input.GetString()!];
        }
        else
        {
            return Problem(StatusCodes.Status400BadRequest, "Input not a string", $"'input' must be a string or an array of strings; it was {Describe(input.ValueKind)}.");
        }

        for (int i = 0; i < inputs.Length; i++)
        {
            string field = many ? $"input[{i}]" : "input";
            if (string.IsNullOrWhiteSpace(inputs[i]))
            {
                return Problem(StatusCodes.Status400BadRequest, "Empty input", $"'{field}' is empty; send some text to embed.");
            }

            int tokens = model.CountTokens(inputs[i]);
            if (tokens > MiniLmModel.MaxTokens)
            {
                return Problem(StatusCodes.Status400BadRequest, "Input too long",
                    $"'{field}' is {tokens} tokens long; {MiniLmModel.ModelId} reads at most {MiniLmModel.MaxTokens} (special tokens included). Split the text.");
            }
        }

        return null;
    }

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Number => "a number",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };

    private static IResult Problem(int status, string title, string detail) => ServiceResponses.Problem(status, title, detail);

    /// <summary>The OpenAI response: <c>data[i].embedding</c> for <c>input[i]</c>, the model, and the usage.</summary>
    private sealed class EmbeddingsResult(GeneratedEmbeddings<Embedding<float>> embeddings, bool base64) : IResult
    {
        public async Task ExecuteAsync(HttpContext httpContext)
        {
            httpContext.Response.ContentType = "application/json; charset=utf-8";
            var buffer = new ArrayBufferWriter<byte>(embeddings.Count * (base64 ? 2_200 : 4_400));
            using (var json = new Utf8JsonWriter(buffer))
            {
                json.WriteStartObject();
                json.WriteString("object", "list");
                json.WriteStartArray("data");
                for (int i = 0; i < embeddings.Count; i++)
                {
                    json.WriteStartObject();
                    json.WriteString("object", "embedding");
                    json.WriteNumber("index", i);
                    ReadOnlySpan<float> vector = embeddings[i].Vector.Span;
                    if (base64)
                    {
                        // OpenAI's base64 is little-endian float32, the memory layout on x64 and arm64.
                        json.WriteBase64String("embedding", MemoryMarshal.AsBytes(vector));
                    }
                    else
                    {
                        json.WriteStartArray("embedding");
                        foreach (float f in vector)
                        {
                            json.WriteNumberValue(f);
                        }

                        json.WriteEndArray();
                    }

                    json.WriteEndObject();
                }

                json.WriteEndArray();
                json.WriteString("model", MiniLmModel.ModelId);
                json.WriteStartObject("usage");
                long tokens = embeddings.Usage?.InputTokenCount ?? 0;
                json.WriteNumber("prompt_tokens", tokens);
                json.WriteNumber("total_tokens", embeddings.Usage?.TotalTokenCount ?? tokens);
                json.WriteEndObject();
                json.WriteEndObject();
            }

            await httpContext.Response.Body.WriteAsync(buffer.WrittenMemory, httpContext.RequestAborted);
        }
    }
}
