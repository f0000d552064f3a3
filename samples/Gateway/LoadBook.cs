using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Yarp.ReverseProxy.Model;

namespace Batching.Samples.Gateway;

/// <summary>One instance's load as it last reported it (<c>X-Batching-Load</c>, or a poll of its <c>/metrics</c>).</summary>
internal readonly record struct LoadReport(double EstimatedWaitMs, int Queued, int Capacity, int Slots)
{
    public const string HeaderName = "X-Batching-Load";

    /// <summary>Reads the header's RFC 8941 dictionary (split on ',' then on the first '='); members it does not use are
    /// skipped. <see langword="null"/> when <c>estimated_wait_ms</c> is missing or unreadable.</summary>
    public static LoadReport? Parse(string? header)
    {
        if (string.IsNullOrEmpty(header))
        {
            return null;
        }

        double? wait = null;
        int queued = 0, capacity = 0, slots = 0;
        foreach (string member in header.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int equals = member.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                continue;
            }

            ReadOnlySpan<char> key = member.AsSpan(0, equals), value = member.AsSpan(equals + 1);
            if (key.SequenceEqual("estimated_wait_ms") && double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double ms) && ms >= 0)
            {
                wait = ms;
            }
            else if (key.SequenceEqual("queued"))
            {
                _ = int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out queued);
            }
            else if (key.SequenceEqual("capacity"))
            {
                _ = int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out capacity);
            }
            else if (key.SequenceEqual("slots"))
            {
                _ = int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out slots);
            }
        }

        return wait is { } w ? new LoadReport(w, queued, capacity, slots) : null;
    }
}

/// <summary>What the gateway knows of one instance's load, updated from every response it forwards.</summary>
internal sealed class InstanceLoad(string address)
{
    // Weight of a new sample in the moving averages: about the last five responses.
    private const double Smoothing = 0.2;

    private const int WarmUpSamples = 4;

    private readonly Lock _lock = new();
    private LoadReport _last;
    private long _reportedAt;
    private int _picksSinceReport;
    private double _msPerQueuedItem;
    private double _latencyMs;
    private double _serviceMs;
    private int _serviceSamples;
    private long _servedAt;
    private long _exploredAt;

    public string Address { get; } = address;

    /// <summary>When the last report arrived (a <see cref="Stopwatch"/> timestamp); 0 before the first.</summary>
    public long ReportedAt => Volatile.Read(ref _reportedAt);

    public void Report(LoadReport report)
    {
        lock (_lock)
        {
            _last = report;
            _reportedAt = Stopwatch.GetTimestamp();
            _picksSinceReport = 0;
            if (report.Queued > 0 && report.EstimatedWaitMs > 0)
            {
                double sample = report.EstimatedWaitMs / report.Queued;
                _msPerQueuedItem = _msPerQueuedItem == 0 ? sample : _msPerQueuedItem + (Smoothing * (sample - _msPerQueuedItem));
            }
        }
    }

    /// <summary>One response's latency; with <paramref name="waitAtPickMs"/> (the wait the policy expected when it picked
    /// the instance) also a sample of its service time, the part of the latency that was not queueing.</summary>
    public void Latency(TimeSpan latency, double? waitAtPickMs)
    {
        lock (_lock)
        {
            double ms = latency.TotalMilliseconds;
            _latencyMs = _latencyMs == 0 ? ms : _latencyMs + (Smoothing * (ms - _latencyMs));
            _servedAt = Stopwatch.GetTimestamp();
            if (waitAtPickMs is { } wait)
            {
                // The first responses include JIT and connection set-up: the least of them starts the average, so one
                // slow start cannot make an instance look slow until it is picked again.
                double service = Math.Max(0, ms - wait);
                _serviceMs = _serviceSamples == 0 ? service
                    : _serviceSamples < WarmUpSamples ? Math.Min(_serviceMs, service)
                    : _serviceMs + (Smoothing * (service - _serviceMs));
                _serviceSamples++;
            }
        }
    }

    public void Picked()
    {
        lock (_lock)
        {
            _picksSinceReport++;
        }
    }

    /// <summary>The wait a new request would see: the last reported wait (or, if more, its queue at the instance's
    /// measured cost per queued item: the report says 0 while a slot is free, however many items are queued behind it),
    /// plus the requests sent since that report (not yet in it) at the same cost.</summary>
    public double EstimatedWaitMs()
    {
        lock (_lock)
        {
            return WaitMs();
        }
    }

    /// <summary>Whether the instance has answered nothing for <paramref name="stale"/>, nor been explored since: then it
    /// is to get the next request whatever its estimate, so an estimate gone stale (a pause, a slow start) cannot keep it
    /// unused for good. Marks it explored.</summary>
    public bool TryExplore(TimeSpan stale)
    {
        lock (_lock)
        {
            long now = Stopwatch.GetTimestamp();
            if (Stopwatch.GetElapsedTime(Math.Max(_servedAt, _exploredAt), now) < stale)
            {
                return false;
            }

            _exploredAt = now;
            return true;
        }
    }

    /// <summary>When a request sent now would be answered: <see cref="EstimatedWaitMs"/> plus the instance's measured
    /// service time, so a slow device with a free slot does not look better than a fast one with a short queue.</summary>
    public double ExpectedCompletionMs()
    {
        lock (_lock)
        {
            return WaitMs() + _serviceMs;
        }
    }

    /// <summary>The tie-breaker: the instance's typical response time, times the requests this gateway has in flight to it (plus this one).</summary>
    public double ExpectedServiceMs(int inFlight)
    {
        lock (_lock)
        {
            return _latencyMs * (inFlight + 1);
        }
    }

    private double WaitMs()
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        return Math.Max(_last.EstimatedWaitMs, _last.Queued * _msPerQueuedItem) + (_picksSinceReport * _msPerQueuedItem);
    }

    public LoadReport Last
    {
        get
        {
            lock (_lock)
            {
                return _last;
            }
        }
    }
}

/// <summary>Every instance's <see cref="InstanceLoad"/>, by YARP destination id.</summary>
internal sealed class LoadBook
{
    private readonly ConcurrentDictionary<string, InstanceLoad> _instances = new(StringComparer.Ordinal);

    public LoadBook(GatewayOptions options)
    {
        for (int i = 0; i < options.Instances.Count; i++)
        {
            _instances[DestinationId(i)] = new InstanceLoad(options.Instances[i].ToString());
        }
    }

    public static string DestinationId(int index) => string.Create(CultureInfo.InvariantCulture, $"instance-{index}");

    public IEnumerable<KeyValuePair<string, InstanceLoad>> All => _instances;

    /// <summary>The instance behind <paramref name="destination"/>; one is made for a destination the book did not know
    /// (one that DNS resolution added: <c>Gateway:ResolveDns</c>).</summary>
    public InstanceLoad this[DestinationState destination] =>
        _instances.GetOrAdd(destination.DestinationId, static (_, d) => new InstanceLoad(d.Model.Config.Address), destination);
}
