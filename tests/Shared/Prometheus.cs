// Shared by the web samples' test projects (linked into each): reading a service's /metrics page.
using System.Globalization;
using Xunit;

namespace Batching.Tests.Shared;

internal static class Prometheus
{
    public static async Task<string> ScrapeAsync(HttpClient client)
    {
        using HttpResponseMessage response = await client.GetAsync("/metrics");
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadAsStringAsync();
    }

    /// <summary>Polls /metrics until the sample named <paramref name="metric"/> for <paramref name="processor"/>
    /// (and <paramref name="label"/>, if given) reads <paramref name="expected"/>, failing after <paramref name="patience"/>.</summary>
    public static async Task WaitForAsync(HttpClient client, string metric, string processor, double expected, string? label, TimeSpan patience)
    {
        using var timeout = new CancellationTokenSource(patience);
        double? last = null;
        while (!timeout.IsCancellationRequested)
        {
            last = Read(await ScrapeAsync(client), metric, processor, label);
            if (last == expected)
            {
                return;
            }

            await Task.Delay(10);
        }

        Assert.Fail($"{metric} for '{processor}' {label} stayed at {last?.ToString(CultureInfo.InvariantCulture) ?? "(absent)"}; expected {expected}.");
    }

    /// <summary>The value of the first sample of <paramref name="metric"/> whose labels carry the processor (and <paramref name="label"/>).</summary>
    public static double? Read(string exposition, string metric, string processor, string? label = null)
    {
        foreach (string line in exposition.Split('\n'))
        {
            if (line.StartsWith(metric + "{", StringComparison.Ordinal)
                && line.Contains($"batching_processor=\"{processor}\"", StringComparison.Ordinal)
                && (label is null || line.Contains(label, StringComparison.Ordinal)))
            {
                return double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
            }
        }

        return null;
    }
}
