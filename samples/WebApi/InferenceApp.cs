using Batching.Ilgpu;
using Batching.Samples.WebApi.Completions;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace Batching.Samples.WebApi;

/// <summary>Builds the inference service: a dense layer behind a batch processor, on a GPU when there is one.</summary>
public static class InferenceApp
{
    /// <summary>The service key of the processor behind <c>/v1/infer-unbatched</c>.</summary>
    public const string UnbatchedKey = "infer-unbatched";

    /// <summary>The name of the batched processor in logs, metrics and health.</summary>
    public const string BatchedName = "infer";

    /// <summary>The priority levels of both processors unless configured: 0 (interactive, the default) and 1 (bulk).</summary>
    public const int PriorityLevels = 2;

    /// <summary>Builds the app. <paramref name="configure"/> runs last, so tests can replace services.</summary>
    /// <param name="args">Command line: <c>--port N</c>, <c>--urls</c>, and any configuration key such as <c>--Batching:MaxBatchSize 32</c>.</param>
    /// <param name="configure">Changes to the builder before the app is built; <see langword="null"/> for none.</param>
    /// <returns>The app, with its processors built and warmed, not yet started.</returns>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        // Content root at the binary, so appsettings.json is found whatever the working directory.
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        builder.WebHost.UseUrls(ListenUrl(builder.Configuration));

        var model = new ModelOptions();
        builder.Configuration.GetSection("Model").Bind(model);
        builder.Services.AddSingleton(model);
        float[] parameters = model.CreateParameters();
        GpuDevicePreference device = builder.Configuration.GetValue("Gpu:Device", GpuDevicePreference.Auto);

        void Rows(GpuRowOptions<float> rows)
        {
            rows.InputWidth = model.InputWidth;
            rows.OutputWidth = model.OutputWidth;
            rows.Parameters = parameters;
            rows.Device = device;
        }

        IConfigurationSection batching = builder.Configuration.GetSection("Batching");
        FlushPolicy policy = ParsePolicy(batching["Policy"]);
        void Batched(BatchingOptions o)
        {
            // A web service sheds load rather than queueing without bound: Reject maps to 503 + Retry-After.
            o.Name = BatchedName;
            o.MaxBatchSize = 64;
            o.QueueCapacity = 1024;
            o.QueueFullMode = QueueFullMode.Reject;
            o.FlushPolicy = policy;
            // Two levels: 0 (the default) for interactive requests, 1 for bulk or background work ("priority": 1).
            // With the default weights (2 : 1), level 0 gets two thirds of the dispatched items while both have work,
            // and level 1 never starves. Batching:PriorityLevels (and Batching:PriorityWeights) change it.
            o.PriorityLevels = PriorityLevels;
            batching.Bind(o);
        }

        IBatchingBuilder processors = builder.Services.AddBatching();
        (double slowdown, TimeSpan batchDelay) = SlowDevice.Read(builder.Configuration);
        if (slowdown == 1 && batchDelay == TimeSpan.Zero)
        {
            processors.AddGpuRowProcessor<float, DenseReluKernel>(Rows, configure: Batched);
        }
        else
        {
            // A slower device: the batches run on the real one, then sleep out the rest of their time (see SlowDevice).
            processors
                .AddKeyedGpuRowProcessor<float, DenseReluKernel>(SlowDevice.DeviceKey, Rows, configure: o =>
                {
                    o.Name = SlowDevice.DeviceKey;
                    o.MaxBatchSize = 1024;
                    o.QueueCapacity = 4096;
                    o.MaxDelay = TimeSpan.Zero;
                    o.FlushPolicy = FlushPolicy.Deadline;
                })
                .AddProcessor(services => SlowDevice.Handler(
                    services.GetRequiredKeyedService<IBatchProcessor<ReadOnlyMemory<float>, float[]>>(SlowDevice.DeviceKey), slowdown, batchDelay), o =>
                {
                    o.MaxConcurrentBatches = GpuOptions.DefaultMaxBatchesInFlightPerDevice;
                    Batched(o);
                });
        }

        processors
            .AddKeyedGpuRowProcessor<float, DenseReluKernel>(UnbatchedKey, Rows, configure: o =>
            {
                // The same model and device, one item per launch: the baseline that batching is measured against.
                o.PriorityLevels = PriorityLevels;
                batching.Bind(o);
                o.Name = UnbatchedKey;
                o.MaxBatchSize = 1;
                o.MaxDelay = TimeSpan.Zero;
                o.FlushPolicy = FlushPolicy.Deadline;
            });
        builder.AddCompletions();
        builder.Services.AddProblemDetails();
        builder.Services.AddHealthChecks().AddCheck<BatchingHealthCheck>("batching");
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("Batching.Samples.WebApi"))
            .WithMetrics(metrics => metrics
                .AddMeter(BatchingTelemetry.MeterName, "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel")
                .AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0));

        configure?.Invoke(builder);
        WebApplication app = builder.Build();

        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.MapPost("/v1/infer", (HttpContext context, IBatchProcessor<ReadOnlyMemory<float>, float[]> processor, ModelOptions model, ILoggerFactory logs) =>
            InferEndpoint.HandleAsync(context, processor, model, logs));
        app.MapPost("/v1/infer-unbatched", (HttpContext context, [FromKeyedServices(UnbatchedKey)] IBatchProcessor<ReadOnlyMemory<float>, float[]> processor,
            ModelOptions model, ILoggerFactory logs) => InferEndpoint.HandleAsync(context, processor, model, logs));
        app.MapCompletions();
        app.MapHealthChecks("/healthz", new HealthCheckOptions { ResponseWriter = ServiceResponses.WriteHealthAsync });
        app.MapPrometheusScrapingEndpoint("/metrics");

        // Build both processors now: kernel compilation and device start-up must not land on the first request.
        ILogger log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Batching.Samples.WebApi");
        object batched = app.Services.GetRequiredService<IBatchProcessor<ReadOnlyMemory<float>, float[]>>();
        app.Services.GetRequiredKeyedService<IBatchProcessor<ReadOnlyMemory<float>, float[]>>(UnbatchedKey);
        string devices = batched is IGpuDiagnostics gpu ? string.Join("; ", gpu.GetDevices()) : batched.GetType().Name;
        log.LogInformation("Model {InputWidth} -> {OutputWidth} (dense + ReLU) ready on: {Devices}", model.InputWidth, model.OutputWidth, devices);
        return app;
    }

    /// <summary>Batching:Policy: adaptive (the default: no wait at low load, batches grow under load), deadline or size.</summary>
    internal static FlushPolicy ParsePolicy(string? name) => name?.ToLowerInvariant() switch
    {
        null or "" or "adaptive" => FlushPolicy.Adaptive(),
        "deadline" => FlushPolicy.Deadline,
        "size" => FlushPolicy.Size(),
        _ => throw new ArgumentException($"Batching:Policy must be adaptive, deadline or size; it was '{name}'."),
    };

    /// <summary>Where the service listens: 127.0.0.1 (port 5080 by default), or every interface when asked.</summary>
    internal static string ListenUrl(IConfiguration configuration) => ServiceAddress.Listen(configuration, 5080);

    internal static string LoopbackUrl(IConfiguration configuration) => ServiceAddress.Loopback(configuration["port"], configuration["urls"], 5080);
}
