using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.LoadBalancing;
using Yarp.ReverseProxy.Transforms;

namespace Batching.Samples.Gateway;

/// <summary>Builds the gateway: YARP over the instances in <c>Gateway:Instances</c>, with its own <c>/healthz</c> and <c>/metrics</c>.</summary>
public static class GatewayApp
{
    /// <summary>The YARP cluster of instances.</summary>
    public const string ClusterId = "instances";

    /// <summary>Builds the app, not yet started.</summary>
    /// <param name="args">Command line: <c>--port N</c> (default 5090; always 127.0.0.1) and <c>--Gateway:*</c> keys.</param>
    /// <returns>The app.</returns>
    /// <exception cref="ArgumentException">A setting is missing or invalid; the message names it.</exception>
    public static WebApplication Build(string[] args)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        builder.WebHost.UseUrls(ServiceAddress.Listen(builder.Configuration, 5090));
        GatewayOptions options = GatewayOptions.Read(builder.Configuration.GetSection("Gateway"));

        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton<LoadBook>();
        builder.Services.AddSingleton<GatewayMetrics>();
        builder.Services.AddSingleton<ILoadBalancingPolicy, LoadAwarePolicy>();
        builder.Services.AddSingleton<IActiveHealthCheckPolicy, BatchingHealthPolicy>();
        builder.Services.AddSingleton<IPassiveHealthCheckPolicy, TransportFailurePolicy>();
        builder.Services.AddHttpClient();
        builder.Services.AddHostedService<LoadPoller>();
        IReverseProxyBuilder reverseProxy = builder.Services.AddReverseProxy();
        if (options.ResolveDns)
        {
            reverseProxy.AddDnsDestinationResolver(o => o.RefreshPeriod = options.DnsRefresh);
        }

        reverseProxy.LoadFromMemory([Route()], [Cluster(options)])
            .AddTransforms(transforms => transforms.AddResponseTransform(context =>
            {
                LoadBook book = context.HttpContext.RequestServices.GetRequiredService<LoadBook>();
                LoadRecorder.Record(context.HttpContext, context.ProxyResponse, book);
                if (context.ProxyResponse?.StatusCode == System.Net.HttpStatusCode.ServiceUnavailable && RetryOnce.HoldRefusal(context.HttpContext))
                {
                    context.SuppressResponseBody = true;
                }

                return ValueTask.CompletedTask;
            }));
        builder.Services.AddProblemDetails();
        builder.Services.AddHealthChecks().AddCheck<GatewayHealthCheck>("instances");
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("Batching.Samples.Gateway"))
            .WithMetrics(metrics => metrics
                .AddMeter(GatewayMetrics.MeterName, "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel")
                .AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0));

        WebApplication app = builder.Build();
        app.UseStatusCodePages();
        app.MapHealthChecks("/healthz", new HealthCheckOptions { ResponseWriter = WriteHealthAsync });

        // Liveness: the process answers. /healthz is not for that: it is Unhealthy when no instance is, and restarting
        // the gateway would not bring one back.
        app.MapGet("/livez", () => "alive");
        app.MapPrometheusScrapingEndpoint("/metrics");
        app.MapReverseProxy(proxy =>
        {
            proxy.UseMiddleware<RetryOnce>();
            proxy.UseLoadBalancing();
            proxy.UsePassiveHealthChecks();
        });

        _ = app.Services.GetRequiredService<GatewayMetrics>();
        app.Logger.LogInformation("Gateway over {Count} instance(s) ({Instances}), policy {Policy}.", options.Instances.Count,
            string.Join(", ", options.Instances), options.Policy);
        return app;
    }

    /// <summary><c>--port N</c>, else 5090; always on 127.0.0.1, like the other samples.</summary>
    internal static string LoopbackUrl(string? port) => ServiceAddress.Loopback(port, null, 5090);

    // Everything under /v1 goes to the instances (inference, completions); /healthz and /metrics are the gateway's own.
    private static RouteConfig Route() => new()
    {
        RouteId = "v1",
        ClusterId = ClusterId,
        Match = new RouteMatch { Path = "/v1/{**rest}" },
    };

    private static ClusterConfig Cluster(GatewayOptions options) => new()
    {
        ClusterId = ClusterId,
        LoadBalancingPolicy = options.Policy,
        Destinations = options.Instances.Select((uri, i) => (uri, i)).ToDictionary(
            e => LoadBook.DestinationId(e.i), e => new DestinationConfig { Address = e.uri.ToString() }, StringComparer.Ordinal),
        HealthCheck = new HealthCheckConfig
        {
            Active = new ActiveHealthCheckConfig
            {
                Enabled = true,
                Interval = options.HealthInterval,
                Timeout = options.HealthTimeout,
                Policy = BatchingHealthPolicy.PolicyName,
                Path = "/healthz",
            },
            Passive = new PassiveHealthCheckConfig
            {
                Enabled = true,
                Policy = TransportFailurePolicy.PolicyName,
                ReactivationPeriod = options.Reactivation,
            },
        },
    };

    // {"status":…,"description":"2 of 3 instance(s) in rotation.","instances":{"http://…/":"in rotation",…}}: the one check, flattened.
    private static Task WriteHealthAsync(HttpContext context, HealthReport report)
    {
        HealthReportEntry entry = report.Entries.Values.Single();
        return context.Response.WriteAsJsonAsync(new
        {
            status = report.Status.ToString(),
            description = entry.Description,
            instances = entry.Data.ToDictionary(d => d.Key, d => d.Value.ToString(), StringComparer.Ordinal),
        });
    }
}
