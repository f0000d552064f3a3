// Shared by the web samples (linked into each project): the /healthz body and the HTTP answers to the batching
// outcomes every endpoint maps the same way.
using System.Text.Json;
using Batching;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Batching.Samples;

internal static class ServiceResponses
{
    /// <summary>{"status":…,"checks":{name:{"status","description","data":{…}}}}; Degraded still answers 200, so
    /// routers read the status from the body.</summary>
    public static async Task WriteHealthAsync(HttpContext context, HealthReport report)
    {
        context.Response.ContentType = "application/json; charset=utf-8";
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("status", report.Status.ToString());
            json.WriteStartObject("checks");
            foreach ((string name, HealthReportEntry entry) in report.Entries)
            {
                json.WriteStartObject(name);
                json.WriteString("status", entry.Status.ToString());
                json.WriteString("description", entry.Description);
                json.WriteStartObject("data");
                foreach ((string key, object value) in entry.Data)
                {
                    json.WriteString(key, value.ToString());
                }

                json.WriteEndObject();
                json.WriteEndObject();
            }

            json.WriteEndObject();
            json.WriteEndObject();
        }

        await context.Response.Body.WriteAsync(buffer.WrittenMemory, context.RequestAborted);
    }

    /// <summary>Whether <see cref="Problem(Exception, HttpContext, string)"/> answers <paramref name="error"/>: the outcomes
    /// that mean the same for every endpoint (a full queue, a departed client, shutdown, a timeout, rejected input).</summary>
    public static bool Handles(Exception error, HttpContext context) => error switch
    {
        BatchQueueFullException or ObjectDisposedException or TimeoutException or ArgumentException => true,
        OperationCanceledException => context.RequestAborted.IsCancellationRequested,
        _ => false,
    };

    /// <summary>The answer to an outcome <see cref="Handles"/> accepts; <paramref name="work"/> names what timed out.</summary>
    public static IResult Problem(Exception error, HttpContext context, string work)
    {
        switch (error)
        {
            case BatchQueueFullException:
                context.Response.Headers.RetryAfter = "1";
                return Problem(StatusCodes.Status503ServiceUnavailable, "Queue full", error.Message);
            case OperationCanceledException:
                // Nobody is left to read a response; 499 only shows in the server's own logs and metrics.
                return TypedResults.StatusCode(499);
            case ObjectDisposedException:
                context.Response.Headers.RetryAfter = "1";
                return Problem(StatusCodes.Status503ServiceUnavailable, "Shutting down", "The service is shutting down; retry on another instance.");
            case TimeoutException:
                // Queued past the request's timeout, or a batch that ran past BatchingOptions.ExecutionTimeout.
                return Problem(StatusCodes.Status504GatewayTimeout, $"{work} timed out", error.Message);
            default:
                return Problem(StatusCodes.Status400BadRequest, "Input rejected", error.Message);
        }
    }

    public static IResult Problem(int status, string title, string detail) =>
        TypedResults.Problem(detail: detail, statusCode: status, title: title);
}
