using System.Buffers;
using System.Text.Json;

namespace Batching.Samples.WebApi;

/// <summary>One item in, one item out: validates the body, awaits the processor, maps its failures to HTTP.</summary>
internal static class InferEndpoint
{
    /// <summary>Far above a valid body (256 floats are about 5 KB), far below anything that could hurt the server.</summary>
    public const int MaxBodyBytes = 64 * 1024;

    public static async Task<IResult> HandleAsync(HttpContext context, IBatchProcessor<ReadOnlyMemory<float>, float[]> processor, ModelOptions model,
        ILoggerFactory logs)
    {
        if (!context.Request.HasJsonContentType())
        {
            return Problem(StatusCodes.Status415UnsupportedMediaType, "Unsupported media type",
                $"Send the body as JSON with 'Content-Type: application/json'; it was '{context.Request.ContentType ?? "(none)"}'.");
        }

        InferRequest? request;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(MaxBodyBytes + 1);
        try
        {
            int length = 0;
            int read;
            while ((read = await context.Request.Body.ReadAsync(buffer.AsMemory(length, MaxBodyBytes + 1 - length), context.RequestAborted)) > 0)
            {
                length += read;
                if (length > MaxBodyBytes)
                {
                    return Problem(StatusCodes.Status413PayloadTooLarge, "Body too large", $"The body must be at most {MaxBodyBytes} bytes.");
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

        float[]? features = request?.Features;
        if (features is null)
        {
            return Problem(StatusCodes.Status400BadRequest, "Missing features",
                $"The body must be an object with a 'features' array of {model.InputWidth} numbers.");
        }

        if (features.Length != model.InputWidth)
        {
            return Problem(StatusCodes.Status400BadRequest, "Wrong vector width",
                $"'features' must hold exactly {model.InputWidth} numbers; it held {features.Length}.");
        }

        int bad = Array.FindIndex(features, f => !float.IsFinite(f));
        if (bad >= 0)
        {
            return Problem(StatusCodes.Status400BadRequest, "Value out of range", $"features[{bad}] is not a finite single-precision number.");
        }

        try
        {
            // RequestAborted: a client that disconnects takes its item out of the queue (or out of its running batch).
            float[] outputs = await processor.ProcessAsync(features, context.RequestAborted);
            return TypedResults.Json(new InferResponse(outputs), AppJson.Default.InferResponse);
        }
        catch (BatchQueueFullException ex)
        {
            context.Response.Headers.RetryAfter = "1";
            return Problem(StatusCodes.Status503ServiceUnavailable, "Queue full", ex.Message);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // Nobody is left to read a response; 499 only shows in the server's own logs and metrics.
            return TypedResults.StatusCode(499);
        }
        catch (ObjectDisposedException)
        {
            context.Response.Headers.RetryAfter = "1";
            return Problem(StatusCodes.Status503ServiceUnavailable, "Shutting down", "The service is shutting down; retry on another instance.");
        }
        catch (TimeoutException ex)
        {
            return Problem(StatusCodes.Status504GatewayTimeout, "Inference timed out", ex.Message);
        }
        catch (ArgumentException ex)
        {
            return Problem(StatusCodes.Status400BadRequest, "Input rejected", ex.Message);
        }
        catch (BatchExecutionException ex)
        {
            logs.CreateLogger(typeof(InferEndpoint)).LogWarning(ex, "Inference failed for a batch of {BatchSize} item(s).", ex.BatchSize);
            return Problem(StatusCodes.Status500InternalServerError, "Inference failed", "The model failed on the batch carrying this item.");
        }
    }

    private static IResult Problem(int status, string title, string detail) =>
        TypedResults.Problem(detail: detail, statusCode: status, title: title);
}
