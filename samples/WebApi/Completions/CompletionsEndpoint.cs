using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Options;

namespace Batching.Samples.WebApi.Completions;

/// <summary>The body of <c>POST /v1/completions</c>, in the OpenAI shape (the fields this model can honour).</summary>
internal sealed class CompletionRequest
{
    [JsonPropertyName("model")]
    public string? Model { get; set; }

    [JsonPropertyName("prompt")]
    public JsonElement Prompt { get; set; }

    [JsonPropertyName("max_tokens")]
    public int? MaxTokens { get; set; }

    [JsonPropertyName("stream")]
    public bool Stream { get; set; }

    [JsonPropertyName("seed")]
    public ulong? Seed { get; set; }
}

/// <summary>
/// <c>POST /v1/completions</c> over a <see cref="IGenerationProcessor{TPrompt, TToken}"/> (continuous batching): with
/// <c>"stream": true</c> each character goes out as a server-sent event as soon as its step produced it, in OpenAI's
/// <c>text_completion</c> chunk shape, ending with <c>data: [DONE]</c>; otherwise the whole text in one response.
/// The request's <c>RequestAborted</c> token is the generation's token, so a client that disconnects stops its
/// sequence before the model's next step.
/// </summary>
internal static class CompletionsEndpoint
{
    /// <summary>The model's name in responses.</summary>
    public const string ModelName = "readme-char-4gram";

    /// <summary>The generation processor's name in logs, metrics and health.</summary>
    public const string ProcessorName = "completions";

    /// <summary>max_tokens when the request names none (OpenAI's default is 16).</summary>
    public const int DefaultMaxTokens = 16;

    /// <summary>The longest prompt accepted, in characters.</summary>
    public const int MaxPromptChars = 8192;

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>Registers the model and its generation processor; configuration section <c>Generation</c> binds the options.</summary>
    public static void AddCompletions(this WebApplicationBuilder builder)
    {
        TimeSpan delay = TimeSpan.FromMilliseconds(builder.Configuration.GetValue("Generation:StepDelayMs", 0.0));
        var model = CharModel.FromEmbeddedReadme(delay);
        builder.Services.AddSingleton(model);
        IConfigurationSection section = builder.Configuration.GetSection("Generation");
        builder.Services.AddBatching().AddGenerationProcessor<CompletionPrompt, CharState, char>(model.Start, model.Step, o =>
        {
            o.Name = ProcessorName;
            o.MaxSequences = 32;
            o.QueueCapacity = 256;
            o.QueueFullMode = QueueFullMode.Reject; // shed load as 503 + Retry-After, like /v1/infer
            o.MaxTokensPerSequence = 1024;
            o.PriorityLevels = InferenceApp.PriorityLevels;
            section.Bind(o);
        });
    }

    public static void MapCompletions(this WebApplication app)
    {
        int limit = app.Services.GetRequiredService<IOptionsMonitor<GenerationOptions>>()
            .Get(GenerationBuilderExtensions.OptionsName<CompletionPrompt, char>(null)).MaxTokensPerSequence;
        app.MapPost("/v1/completions", (HttpContext context, IGenerationProcessor<CompletionPrompt, char> processor, CharModel model) =>
            HandleAsync(context, processor, model, limit));
    }

    private static async Task<IResult> HandleAsync(HttpContext context, IGenerationProcessor<CompletionPrompt, char> processor, CharModel model, int maxTokensLimit)
    {
        CompletionRequest? request;
        try
        {
            request = await context.Request.ReadFromJsonAsync<CompletionRequest>(Json, context.RequestAborted);
        }
        catch (JsonException ex)
        {
            return Problem(StatusCodes.Status400BadRequest, "Malformed JSON", ex.Message);
        }
        catch (InvalidOperationException ex)
        {
            return Problem(StatusCodes.Status415UnsupportedMediaType, "Unsupported media type", ex.Message);
        }

        if (request is null || request.Prompt.ValueKind != JsonValueKind.String)
        {
            return Problem(StatusCodes.Status400BadRequest, "Invalid prompt", "'prompt' must be one string (arrays of prompts are not supported by this sample).");
        }

        string prompt = request.Prompt.GetString()!;
        int maxTokens = request.MaxTokens ?? DefaultMaxTokens;
        if (prompt.Length > MaxPromptChars)
        {
            return Problem(StatusCodes.Status400BadRequest, "Prompt too long", $"'prompt' must be at most {MaxPromptChars} characters; it was {prompt.Length}.");
        }

        if (maxTokens < 1 || maxTokens > maxTokensLimit)
        {
            return Problem(StatusCodes.Status400BadRequest, "Invalid max_tokens", $"'max_tokens' must be between 1 and {maxTokensLimit}; it was {maxTokens}.");
        }

        if (model.UnknownCharacters(prompt) is { } unknown)
        {
            context.Response.Headers["X-Ignored-Characters"] = Uri.EscapeDataString(unknown); // the model has no weights for them
        }

        ulong seed = request.Seed ?? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
        string id = $"cmpl-{Guid.NewGuid():N}";
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        IAsyncEnumerable<char> tokens = processor.GenerateAsync(new CompletionPrompt(prompt, maxTokens, seed), context.RequestAborted);
        await using IAsyncEnumerator<char> e = tokens.GetAsyncEnumerator();
        bool any;
        try
        {
            // The first token decides the status code: queue full, shutting down and bad input still map to HTTP.
            any = await e.MoveNextAsync();
        }
        catch (BatchQueueFullException ex)
        {
            context.Response.Headers.RetryAfter = "1";
            return Problem(StatusCodes.Status503ServiceUnavailable, "Queue full", ex.Message);
        }
        catch (ObjectDisposedException)
        {
            context.Response.Headers.RetryAfter = "1";
            return Problem(StatusCodes.Status503ServiceUnavailable, "Shutting down", "The service is shutting down; retry on another instance.");
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            return Results.Empty; // the client left
        }

        return request.Stream
            ? await StreamAsync(context, e, any, id, created, maxTokens)
            : await WholeAsync(context, e, any, id, created, prompt.Length, maxTokens);
    }

    private static async Task<IResult> WholeAsync(HttpContext context, IAsyncEnumerator<char> e, bool any, string id, long created, int promptChars, int maxTokens)
    {
        var text = new StringBuilder();
        try
        {
            for (bool more = any; more; more = await e.MoveNextAsync())
            {
                text.Append(e.Current);
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            return Results.Empty;
        }
        catch (Exception ex) when (ex is BatchExecutionException or TimeoutException)
        {
            return Problem(StatusCodes.Status500InternalServerError, "Generation failed", ex.Message);
        }

        return Results.Json(new
        {
            id,
            @object = "text_completion",
            created,
            model = ModelName,
            choices = new[] { new { text = text.ToString(), index = 0, logprobs = (object?)null, finish_reason = FinishReason(text.Length, maxTokens) } },
            usage = new { prompt_tokens = promptChars, completion_tokens = text.Length, total_tokens = promptChars + text.Length },
        });
    }

    private static async Task<IResult> StreamAsync(HttpContext context, IAsyncEnumerator<char> e, bool any, string id, long created, int maxTokens)
    {
        HttpResponse response = context.Response;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        int count = 0;
        try
        {
            for (bool more = any; more; more = await e.MoveNextAsync())
            {
                count++;
                await WriteEventAsync(response, Chunk(id, created, e.Current.ToString(), null), context.RequestAborted);
            }

            await WriteEventAsync(response, Chunk(id, created, "", FinishReason(count, maxTokens)), context.RequestAborted);
            await response.WriteAsync("data: [DONE]\n\n", context.RequestAborted);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client left: leaving the loop disposes the enumerator, which removes the sequence before the next step.
        }
        catch (Exception ex) when (ex is BatchExecutionException or TimeoutException)
        {
            // Headers are gone; report in-band, as OpenAI-compatible servers do.
            await WriteEventAsync(response, new { error = new { message = ex.Message, type = "server_error" } }, CancellationToken.None);
        }

        return Results.Empty;
    }

    private static object Chunk(string id, long created, string text, string? finishReason) => new
    {
        id,
        @object = "text_completion",
        created,
        model = ModelName,
        choices = new[] { new { text, index = 0, logprobs = (object?)null, finish_reason = finishReason } },
    };

    private static async Task WriteEventAsync(HttpResponse response, object payload, CancellationToken cancellationToken)
    {
        await response.WriteAsync("data: " + JsonSerializer.Serialize(payload, Json) + "\n\n", cancellationToken);
        await response.Body.FlushAsync(cancellationToken);
    }

    private static string FinishReason(int produced, int maxTokens) => produced >= maxTokens ? "length" : "stop";

    private static IResult Problem(int status, string title, string detail) =>
        TypedResults.Problem(detail: detail, statusCode: status, title: title);
}
