using System.Diagnostics;
using System.Globalization;

namespace Batching.Samples.Gateway;

/// <summary>
/// The fallback for an instance that has had no traffic for a while (its last report is older than
/// <see cref="GatewayOptions.LoadStale"/>): read its load from its <c>/metrics</c>, so an instance the policy stopped
/// choosing while it was busy is seen again once it has drained. Instances with traffic are never polled.
/// </summary>
internal sealed class LoadPoller(LoadBook book, GatewayOptions options, IHttpClientFactory clients, ILogger<LoadPoller> logger) : BackgroundService
{
    /// <summary>The instances' batched processor (samples/WebApi's <c>/v1/infer</c>).</summary>
    public const string Processor = "infer";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        HttpClient client = clients.CreateClient(nameof(LoadPoller));
        client.Timeout = options.HealthTimeout;
        using var timer = new PeriodicTimer(options.LoadStale);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            foreach ((_, InstanceLoad instance) in book.All)
            {
                if (Stopwatch.GetElapsedTime(instance.ReportedAt) < options.LoadStale)
                {
                    continue;
                }

                try
                {
                    string metrics = await client.GetStringAsync(new Uri(new Uri(instance.Address), "metrics"), stoppingToken);
                    if (FromMetrics(metrics, instance.Last) is { } report)
                    {
                        instance.Report(report);
                    }
                }
                catch (Exception ex) when (ex is HttpRequestException or UriFormatException or TaskCanceledException && !stoppingToken.IsCancellationRequested)
                {
                    // Down or slow: health checks take it out of rotation; the book keeps its last report.
                    logger.LogDebug(ex, "Load poll of {Address} failed.", instance.Address);
                }
            }
        }
    }

    /// <summary>The <c>infer</c> processor's estimated wait and queue depth from a Prometheus scrape; the other fields as last reported.</summary>
    internal static LoadReport? FromMetrics(string exposition, LoadReport previous)
    {
        double? waitSeconds = null;
        int queued = 0;
        string label = $"batching_processor=\"{Processor}\"";
        foreach (string line in exposition.Split('\n'))
        {
            if (!line.Contains(label, StringComparison.Ordinal) || !double.TryParse(line.AsSpan(line.LastIndexOf(' ') + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
            {
                continue;
            }

            if (line.StartsWith("batching_queue_estimated_wait_seconds{", StringComparison.Ordinal))
            {
                waitSeconds = value;
            }
            else if (line.StartsWith("batching_queue_depth{", StringComparison.Ordinal))
            {
                queued += (int)value;
            }
        }

        return waitSeconds is { } w ? previous with { EstimatedWaitMs = w * 1000, Queued = queued } : null;
    }
}
