using Batching.Samples.EmbeddingService.Model;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.AI;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace Batching.Samples.EmbeddingService;

/// <summary>Builds the embedding service: all-MiniLM-L6-v2 on ONNX Runtime behind <c>UseBatching()</c>.</summary>
public static class EmbeddingApp
{
    /// <summary>The port used when neither <c>--port</c> nor <c>--urls</c> is given.</summary>
    public const int DefaultPort = 5085;

    /// <summary>The service key of the generator <c>UseBatching()</c> wraps (the model, unbatched); tests replace it.</summary>
    public const string InnerKey = "embeddings-inner";

    /// <summary>The source and meter name of the pipeline's <c>UseOpenTelemetry()</c> stage (Microsoft.Extensions.AI's default).</summary>
    public const string GenAiSourceName = "Experimental.Microsoft.Extensions.AI";

    /// <summary>Builds the app. <paramref name="configure"/> runs last, so tests can replace services.</summary>
    /// <param name="args">Command line: <c>--port N</c>, <c>--urls</c>, and any configuration key such as <c>--Batching:MaxBatchSize 32</c>.</param>
    /// <param name="configure">Changes to the builder before the app is built; <see langword="null"/> for none.</param>
    /// <returns>The app, with its model loaded and warmed, not yet started.</returns>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        builder.WebHost.UseUrls(ServiceAddress.Listen(builder.Configuration, DefaultPort));

        var modelOptions = new ModelOptions();
        builder.Configuration.GetSection("Model").Bind(modelOptions);
        builder.Services.AddSingleton(modelOptions);
        // Lazy, so the token weigher below and the container share the one model, built on first use.
        var model = new Lazy<MiniLmModel>(() => new MiniLmModel(modelOptions));
        builder.Services.AddSingleton(_ => model.Value);

        IConfigurationSection batching = builder.Configuration.GetSection("Batching");
        builder.Services.AddKeyedSingleton<IEmbeddingGenerator<string, Embedding<float>>>(InnerKey,
            (sp, _) => new MiniLmEmbeddingGenerator(sp.GetRequiredService<MiniLmModel>(), sp.GetService<TimeProvider>()));
        builder.Services.AddEmbeddingGenerator(sp => sp.GetRequiredKeyedService<IEmbeddingGenerator<string, Embedding<float>>>(InnerKey))
            // Before UseBatching: one span per request, and each batch activity links to the spans of the requests it carried.
            .UseOpenTelemetry(sourceName: GenAiSourceName)
            .UseBatching(o => ConfigureBatching(o, batching, model));
        // A request larger than the queue could never be admitted in Reject mode; it gets a 400, not an endless 503.
        builder.Services.AddSingleton(new EmbeddingsLimits(Math.Min(EmbeddingsEndpoint.MaxInputs, batching.GetValue("QueueCapacity", 1024))));
        builder.Services.AddSingleton<IBatchingHealthContributor>(sp =>
            sp.GetRequiredService<IEmbeddingGenerator<string, Embedding<float>>>().GetRequiredService<IBatchingHealthContributor>());

        builder.Services.AddProblemDetails();
        builder.Services.AddHealthChecks().AddCheck<BatchingHealthCheck>("batching");
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("Batching.Samples.EmbeddingService"))
            .WithMetrics(metrics => metrics
                .AddMeter(BatchingTelemetry.MeterName, GenAiSourceName, "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel")
                .AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0));

        configure?.Invoke(builder);
        WebApplication app = builder.Build();

        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.MapPost("/v1/embeddings", (HttpContext context, IEmbeddingGenerator<string, Embedding<float>> generator, MiniLmModel model,
            EmbeddingsLimits limits, ILoggerFactory logs) => EmbeddingsEndpoint.HandleAsync(context, generator, model, limits, logs));
        app.MapHealthChecks("/healthz", new HealthCheckOptions { ResponseWriter = ServiceResponses.WriteHealthAsync });
        app.MapPrometheusScrapingEndpoint("/metrics");

        // Load the model and run it once now: loading 90 MB and the first run's allocations must not land on the first request.
        MiniLmModel loaded = app.Services.GetRequiredService<MiniLmModel>();
        loaded.Embed(["warm-up"]);
        app.Services.GetRequiredService<IEmbeddingGenerator<string, Embedding<float>>>();
        app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Batching.Samples.EmbeddingService")
            .LogInformation("{Model} ({Dimensions} dimensions) ready on: {Device}", MiniLmModel.ModelId, MiniLmModel.Dimensions, loaded.Device);
        return app;
    }

    /// <summary>
    /// The service's batching defaults, then the <c>Batching</c> section: any <see cref="BatchingOptions"/> setting,
    /// <c>Batching:Policy</c> (adaptive, deadline or size), and <c>Batching:TokenBudget</c> N &gt; 0 for length-aware
    /// batching (each input weighs its token count and a batch carries at most N tokens).
    /// </summary>
    internal static void ConfigureBatching(BatchingOptions options, IConfiguration section, Lazy<MiniLmModel> model)
    {
        // A web service sheds load rather than queueing without bound: Reject maps to 503 + Retry-After.
        options.MaxBatchSize = 64;
        options.QueueCapacity = 1024;
        options.QueueFullMode = QueueFullMode.Reject;
        section.Bind(options);
        options.FlushPolicy = section["Policy"]?.ToLowerInvariant() switch
        {
            null or "" or "adaptive" => FlushPolicy.Adaptive(),
            "deadline" => FlushPolicy.Deadline,
            "size" => FlushPolicy.Size(),
            string other => throw new ArgumentException($"Batching:Policy must be adaptive, deadline or size; it was '{other}'."),
        };
        int budget = section.GetValue("TokenBudget", 0);
        if (budget < 0)
        {
            throw new ArgumentException($"Batching:TokenBudget must be 0 (off) or a positive token count; it was {budget}.");
        }

        if (budget > 0)
        {
            options.ItemWeight = (string text) => model.Value.CountTokens(text);
            // Never below one longest input, so every valid input fits a batch.
            options.MaxBatchWeight = Math.Max(budget, MiniLmModel.MaxTokens);
        }
    }
}
