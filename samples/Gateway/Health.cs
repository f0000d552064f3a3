using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.Model;

namespace Batching.Samples.Gateway;

/// <summary>
/// Active health: an instance is in rotation only while its <c>/healthz</c> answers 200 with <c>"status":"Healthy"</c>.
/// Degraded (its queue is 90% full, or callers wait for space) takes it out as Unhealthy does, until a probe reads Healthy.
/// </summary>
/// <remarks>ASP.NET Core answers 200 for Degraded, so the status is read from the body (the sample's JSON writer).
/// The read is synchronous because YARP's policy callback is; the body is a few hundred bytes that arrived with the headers.</remarks>
internal sealed class BatchingHealthPolicy(IDestinationHealthUpdater updater, ILogger<BatchingHealthPolicy> logger) : IActiveHealthCheckPolicy
{
    public const string PolicyName = "BatchingHealth";

    private const int MaxBodyBytes = 64 * 1024;

    public string Name => PolicyName;

    public void ProbingCompleted(ClusterState cluster, IReadOnlyList<DestinationProbingResult> probingResults)
    {
        var states = new NewActiveDestinationHealth[probingResults.Count];
        for (int i = 0; i < probingResults.Count; i++)
        {
            DestinationProbingResult probe = probingResults[i];
            string status = Status(probe);
            DestinationHealth health = status == "Healthy" ? DestinationHealth.Healthy : DestinationHealth.Unhealthy;
            if (health != probe.Destination.Health.Active)
            {
                logger.LogInformation("Instance {Destination} ({Address}) is {Status}: {Change} rotation.", probe.Destination.DestinationId,
                    probe.Destination.Model.Config.Address, status, health == DestinationHealth.Healthy ? "back in" : "out of");
            }

            states[i] = new NewActiveDestinationHealth(probe.Destination, health);
        }

        updater.SetActive(cluster, states);
    }

    /// <summary>The instance's reported status, or why there is none.</summary>
    private static string Status(DestinationProbingResult probe)
    {
        if (probe.Response is not { } response)
        {
            return $"unreachable ({probe.Exception?.GetType().Name})";
        }

        if (response.StatusCode != HttpStatusCode.OK)
        {
            return $"HTTP {(int)response.StatusCode}";
        }

        try
        {
            using Stream body = response.Content.ReadAsStream();
            var buffer = new byte[MaxBodyBytes];
            int length = 0, read;
            while (length < buffer.Length && (read = body.Read(buffer, length, buffer.Length - length)) > 0)
            {
                length += read;
            }

            using JsonDocument json = JsonDocument.Parse(buffer.AsMemory(0, length));
            return json.RootElement.TryGetProperty("status", out JsonElement status) && status.GetString() is { } text ? text : "without a status";
        }
        catch (Exception ex) when (ex is IOException or JsonException or HttpRequestException or InvalidOperationException)
        {
            return $"unreadable ({ex.GetType().Name})";
        }
    }
}

/// <summary>Passive health: a transport failure (the instance could not be reached, or dropped the connection) takes the
/// instance out at once, for <see cref="GatewayOptions.Reactivation"/>; the active probe keeps it out until it answers.</summary>
internal sealed class TransportFailurePolicy(IDestinationHealthUpdater updater, GatewayOptions options) : IPassiveHealthCheckPolicy
{
    public const string PolicyName = "FirstTransportFailure";

    public string Name => PolicyName;

    public void RequestProxied(HttpContext context, ClusterState cluster, DestinationState destination)
    {
        if (context.GetForwarderErrorFeature()?.Error is ForwarderError.Request or ForwarderError.RequestTimedOut or ForwarderError.RequestBodyDestination
            or ForwarderError.ResponseBodyDestination)
        {
            updater.SetPassive(cluster, destination, DestinationHealth.Unhealthy, options.Reactivation);
        }
    }
}

/// <summary>The gateway's own <c>/healthz</c>: Healthy with every instance in rotation, Degraded with some, Unhealthy with none.</summary>
internal sealed class GatewayHealthCheck(IProxyStateLookup proxy) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (!proxy.TryGetCluster(GatewayApp.ClusterId, out ClusterState? cluster))
        {
            return Task.FromResult(HealthCheckResult.Unhealthy("The instance cluster is not configured."));
        }

        IReadOnlyList<DestinationState> all = cluster.DestinationsState.AllDestinations, available = cluster.DestinationsState.AvailableDestinations;
        var data = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (DestinationState destination in all)
        {
            data[destination.Model.Config.Address] = available.Contains(destination) ? "in rotation" : $"out (active: {destination.Health.Active}, passive: {destination.Health.Passive})";
        }

        string description = $"{available.Count} of {all.Count} instance(s) in rotation.";
        return Task.FromResult(available.Count == all.Count ? HealthCheckResult.Healthy(description, data)
            : available.Count > 0 ? HealthCheckResult.Degraded(description, data: data)
            : HealthCheckResult.Unhealthy(description, data: data));
    }
}
