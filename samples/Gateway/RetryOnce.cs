using Microsoft.AspNetCore.Http.Features;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;

namespace Batching.Samples.Gateway;

/// <summary>
/// Failover: a request refused by its instance (503: queue full or shutting down) or whose connection failed before a
/// response began is sent once more, to the next-best instance; the client gets an error only when no instance can take it.
/// </summary>
/// <remarks>
/// <para>YARP has no retries (dotnet/yarp#56). This is a middleware in YARP's proxy pipeline, before load balancing:
/// it buffers the body, lets the pipeline run, and on a refusal or transport failure resets the response, removes the
/// failed instance from the request's available destinations and runs load balancing and forwarding again, so the
/// policy picks the next-best instance and passive health, the load book and the metrics see both attempts.</para>
/// <para><c>Microsoft.Extensions.Http.Resilience</c> on the proxy's HTTP client was the other choice; it retries the
/// same request message, already addressed to the failed instance, below YARP: moving it elsewhere would mean
/// rewriting the URI behind YARP's back and hiding the failure from its health checks and from the policy.</para>
/// <para>Inference requests are idempotent, so a retry is safe; a request that timed out (504) is not retried (the
/// instance may still be running it, and a retry would double the load on a cluster that is already slow).</para>
/// </remarks>
internal sealed class RetryOnce(RequestDelegate next, LoadBook book, GatewayMetrics metrics, GatewayOptions options)
{
    private static readonly object AttemptKey = new();
    private static readonly object RefusedKey = new();

    public async Task InvokeAsync(HttpContext context)
    {
        if (!await BufferBodyAsync(context))
        {
            return;
        }

        IReverseProxyFeature proxy = context.GetReverseProxyFeature();
        context.Items[AttemptKey] = 1;
        LoadRecorder.AttemptStarted(context);
        await next(context);
        DestinationState? first = proxy.ProxiedDestination;
        metrics.Routed(first);
        if (first is null && context.GetForwarderErrorFeature()?.Error == ForwarderError.NoAvailableDestinations && !context.Response.HasStarted)
        {
            metrics.Failed("none_in_rotation");
            await NoInstanceAsync(context, "refused", "No instance is in rotation: every one is unhealthy, near full, or unreachable.");
            return;
        }

        if (Failure(context) is not { } reason || first is null || context.Response.HasStarted)
        {
            return;
        }

        DestinationState[] others = [.. proxy.Route.Cluster!.DestinationsState.AvailableDestinations.Where(d => d != first)];
        if (others.Length == 0)
        {
            metrics.Failed(reason);
            await NoInstanceAsync(context, reason, $"The instance ({book[first].Address}) {Describe(reason)} and no other instance is in rotation.");
            return;
        }

        metrics.Retried(reason, first);
        context.Response.Clear();
        context.Features.Set<IForwarderErrorFeature>(null);
        context.Items.Remove(RefusedKey);
        context.Items[AttemptKey] = 2;
        context.Request.Body.Position = 0;
        proxy.AvailableDestinations = others;
        LoadRecorder.AttemptStarted(context);
        await next(context);
        DestinationState? second = proxy.ProxiedDestination;
        metrics.Routed(second);

        // A second refusal passes through as the instance's own 503 (with Retry-After); a second transport failure is ours to explain.
        if (Failure(context) == "transport" && !context.Response.HasStarted)
        {
            metrics.Failed("transport");
            string where = second is null ? "no instance" : book[second].Address;
            await NoInstanceAsync(context, "transport", $"The first instance ({book[first].Address}) {Describe(reason)}; the retry on {where} could not be sent either.");
        }
        else if (second is null && !context.Response.HasStarted)
        {
            metrics.Failed(reason);
            await NoInstanceAsync(context, reason, $"The instance ({book[first].Address}) {Describe(reason)} and no other instance was available for the retry.");
        }
    }

    /// <summary>Called by the response transform: whether a 503 from the instance should be held back for a retry.</summary>
    public static bool HoldRefusal(HttpContext context)
    {
        if (context.Items[AttemptKey] is not 1)
        {
            return false;
        }

        context.Items[RefusedKey] = true;
        return true;
    }

    /// <summary>"refused", "transport", or <see langword="null"/> when the attempt is not to be retried.</summary>
    private static string? Failure(HttpContext context)
    {
        if (context.Items.ContainsKey(RefusedKey))
        {
            return "refused";
        }

        return context.Features.Get<IForwarderErrorFeature>()?.Error is ForwarderError.Request or ForwarderError.RequestBodyDestination ? "transport" : null;
    }

    private static string Describe(string reason) => reason == "refused" ? "refused it (503: queue full or shutting down)" : "could not be reached";

    private async Task<bool> BufferBodyAsync(HttpContext context)
    {
        HttpRequest request = context.Request;
        if (request.ContentLength > options.MaxBodyBytes)
        {
            await ProblemAsync(context, StatusCodes.Status413PayloadTooLarge, "Body too large", $"The gateway forwards bodies of at most {options.MaxBodyBytes} bytes.");
            return false;
        }

        // Buffered (in memory up to 64 KiB, then a temporary file) so a retry can send it again.
        request.EnableBuffering(64 * 1024, options.MaxBodyBytes);
        try
        {
            await request.Body.CopyToAsync(Stream.Null, context.RequestAborted);
        }
        catch (IOException) when (!context.RequestAborted.IsCancellationRequested)
        {
            await ProblemAsync(context, StatusCodes.Status413PayloadTooLarge, "Body too large", $"The gateway forwards bodies of at most {options.MaxBodyBytes} bytes.");
            return false;
        }

        request.Body.Position = 0;
        return true;
    }

    private static Task NoInstanceAsync(HttpContext context, string reason, string detail)
    {
        context.Response.Clear();
        context.Response.Headers.RetryAfter = "1";
        return ProblemAsync(context, reason == "refused" ? StatusCodes.Status503ServiceUnavailable : StatusCodes.Status502BadGateway,
            reason == "refused" ? "No instance can take the request" : "No instance could be reached", detail);
    }

    private static Task ProblemAsync(HttpContext context, int status, string title, string detail)
    {
        context.Features.Get<IHttpResponseFeature>()?.ReasonPhrase = null;
        return Results.Problem(detail: detail, statusCode: status, title: title).ExecuteAsync(context);
    }
}
