using System.Buffers;
using System.Globalization;
using System.Text.Json;

namespace Batching.Samples.WebApi;

/// <summary>
/// One vector or several in, as many outputs out: validates the body, awaits the processor (one <c>ProcessAsync</c>
/// call, or one <c>ProcessManyAsync</c> call for an array of vectors), maps its failures to HTTP, and puts the
/// processor's load on every response (<see cref="LoadHeader"/>).
/// </summary>
internal static class InferEndpoint
{
    /// <summary>Far above a valid body (<see cref="MaxVectors"/> vectors of 256 floats written with 17 digits are about
    /// 350 KB), far below anything that could hurt the server.</summary>
    public const int MaxBodyBytes = 1 << 20;

    /// <summary>The most vectors one request may carry: one full batch of the sample's processor. A larger call would
    /// only be split across batches; clients that have more send more requests, which other instances can serve.</summary>
    public const int MaxVectors = 64;

    /// <summary>The longest <c>timeout_ms</c> accepted: one hour.</summary>
    public const double MaxTimeoutMs = 3_600_000;

    /// <summary>The first buffer for the body: a single 256-float vector fits; larger bodies grow it.</summary>
    private const int InitialBufferBytes = 16 * 1024;

    public static async Task<IResult> HandleAsync(HttpContext context, IBatchProcessor<ReadOnlyMemory<float>, float[]> processor, ModelOptions model,
        ILoggerFactory logs)
    {
        LoadHeader.AddOnStarting(context, processor);
        if (!context.Request.HasJsonContentType())
        {
            return Problem(StatusCodes.Status415UnsupportedMediaType, "Unsupported media type",
                $"Send the body as JSON with 'Content-Type: application/json'; it was '{context.Request.ContentType ?? "(none)"}'.");
        }

        InferRequest? request;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(InitialBufferBytes);
        try
        {
            int length = 0;
            int read;
            while ((read = await context.Request.Body.ReadAsync(buffer.AsMemory(length), context.RequestAborted)) > 0)
            {
                length += read;
                if (length > MaxBodyBytes)
                {
                    return Problem(StatusCodes.Status413PayloadTooLarge, "Body too large", $"The body must be at most {MaxBodyBytes} bytes.");
                }

                if (length == buffer.Length)
                {
                    byte[] larger = ArrayPool<byte>.Shared.Rent(Math.Min(buffer.Length * 2, MaxBodyBytes + 1));
                    buffer.AsSpan(0, length).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = larger;
                }
            }

            if (buffer.AsSpan(0, length).Trim(" \t\r\n"u8).IsEmpty)
            {
                return Problem(StatusCodes.Status400BadRequest, "Empty body",
                    $"The request body is empty; send {{\"features\": [...]}} with {model.InputWidth} numbers.");
            }

            request = JsonSerializer.Deserialize(buffer.AsSpan(0, length), AppJson.Default.InferRequest);
        }
        catch (JsonException ex)
        {
            return Problem(StatusCodes.Status400BadRequest, "Malformed JSON", ex.Message);
        }
        catch (BadHttpRequestException ex)
        {
            return Problem(ex.StatusCode, "Bad request", ex.Message);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        if (Validate(request, model, processor.GetLoad()) is { } invalid)
        {
            return invalid;
        }

        Features features = request!.Features!;
        var options = new RequestOptions(request.Priority ?? 0, request.TimeoutMs is { } ms ? TimeSpan.FromMilliseconds(ms) : Timeout.InfiniteTimeSpan);
        try
        {
            // RequestAborted: a client that disconnects takes its items out of the queue (or out of their running batches).
            if (!features.IsMany)
            {
                float[] outputs = await processor.ProcessAsync(features.Vectors[0], options, context.RequestAborted);
                return TypedResults.Json(new InferResponse(outputs), AppJson.Default.InferResponse);
            }

            float[][] vectors = features.Vectors;
            var inputs = new ReadOnlyMemory<float>[vectors.Length];
            for (int i = 0; i < vectors.Length; i++)
            {
                inputs[i] = vectors[i];
            }

            var results = new float[vectors.Length][];
            await processor.ProcessManyAsync(inputs, results, options, context.RequestAborted);
            return TypedResults.Json(new InferManyResponse(results), AppJson.Default.InferManyResponse);
        }
        catch (Exception ex) when (ServiceResponses.Handles(ex, context))
        {
            return ServiceResponses.Problem(ex, context, "Inference");
        }
        catch (BatchExecutionException ex) when (ex.ItemFailures.Count > 0 && ex.ItemFailures.All(f => f.Error is TimeoutException))
        {
            // Some vectors ran, the others timed out (most often: expired in the queue behind the batches that took the first ones).
            return Problem(StatusCodes.Status504GatewayTimeout, "Inference timed out",
                $"{Describe(ex.ItemFailures, features.Vectors.Length)} timed out; the request fails as a whole. {ex.ItemFailures[0].Error.Message}");
        }
        catch (BatchExecutionException ex)
        {
            logs.CreateLogger(typeof(InferEndpoint)).LogWarning(ex, "Inference failed for a batch of {BatchSize} item(s).", ex.BatchSize);
            return Problem(StatusCodes.Status500InternalServerError, "Inference failed", ex.ItemFailures.Count == 0
                ? "The model failed on the batch carrying this item."
                : $"The model failed for {Describe(ex.ItemFailures, features.Vectors.Length)}.");
        }
    }

    /// <summary>The 400 for the first problem with the request, naming its field; <see langword="null"/> when it is valid.</summary>
    private static IResult? Validate(InferRequest? request, ModelOptions model, ProcessorLoad load)
    {
        Features? features = request?.Features;
        if (features is null)
        {
            return Problem(StatusCodes.Status400BadRequest, "Missing features",
                $"The body must be an object with a 'features' array of {model.InputWidth} numbers (or an array of such arrays).");
        }

        float[][] vectors = features.Vectors;
        int most = Math.Min(MaxVectors, load.QueueCapacity);
        if (features.IsMany && vectors.Length > most)
        {
            return Problem(StatusCodes.Status400BadRequest, "Too many vectors",
                $"'features' may hold at most {most} vectors in one request; it held {vectors.Length}.");
        }

        for (int i = 0; i < vectors.Length; i++)
        {
            string field = features.IsMany ? $"features[{i}]" : "features";
            if (vectors[i].Length != model.InputWidth)
            {
                return Problem(StatusCodes.Status400BadRequest, "Wrong vector width",
                    $"'{field}' must hold exactly {model.InputWidth} numbers; it held {vectors[i].Length}.");
            }

            int bad = Array.FindIndex(vectors[i], f => !float.IsFinite(f));
            if (bad >= 0)
            {
                return Problem(StatusCodes.Status400BadRequest, "Value out of range", $"{field}[{bad}] is not a finite single-precision number.");
            }
        }

        if (request!.Priority is { } priority && (priority < 0 || priority >= load.PriorityLevels))
        {
            return Problem(StatusCodes.Status400BadRequest, "Priority out of range",
                $"'priority' must be from 0 (the most urgent) to {load.PriorityLevels - 1}; it was {priority}.");
        }

        if (request.TimeoutMs is { } timeout && timeout is < 0 or > MaxTimeoutMs)
        {
            return Problem(StatusCodes.Status400BadRequest, "Timeout out of range",
                $"'timeout_ms' must be from 0 to {MaxTimeoutMs.ToString(CultureInfo.InvariantCulture)} milliseconds; it was {timeout.ToString(CultureInfo.InvariantCulture)}.");
        }

        return null;
    }

    /// <summary>Which vectors failed, e.g. "features[8..9] (2 of 10 vectors)".</summary>
    private static string Describe(IReadOnlyList<BatchItemFailure> failures, int total)
    {
        int failed = failures.Sum(f => f.Count);
        string ranges = string.Join(", ", failures.Take(8).Select(f => f.Count == 1 ? $"features[{f.StartIndex}]" : $"features[{f.StartIndex}..{f.StartIndex + f.Count - 1}]"));
        return $"{ranges}{(failures.Count > 8 ? ", ..." : "")} ({failed} of {total} vectors)";
    }

    private static IResult Problem(int status, string title, string detail) => ServiceResponses.Problem(status, title, detail);
}
