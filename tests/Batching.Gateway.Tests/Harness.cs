using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Batching.Samples.WebApi;

namespace Batching.Gateway.Tests;

/// <summary>A sample (samples/WebApi or samples/Gateway) started as its own process: <c>dotnet X.dll --port N ...</c>.</summary>
/// <remarks>Shared by the gateway tests and the gateway benchmark (linked into both), so both run the same cluster.</remarks>
internal sealed class SampleProcess : IDisposable
{
    public const string WebApiDll = "Batching.Samples.WebApi.dll";
    public const string GatewayDll = "Batching.Samples.Gateway.dll";

    private readonly Process _process;
    private readonly Queue<string> _output = new();

    private SampleProcess(Process process, string name, int port)
    {
        _process = process;
        Name = name;
        Port = port;
        Address = new Uri($"http://127.0.0.1:{port}/");
    }

    public string Name { get; }

    public int Port { get; }

    public Uri Address { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>The last lines the process wrote, for a failure message.</summary>
    public string Output
    {
        get
        {
            lock (_output)
            {
                return string.Join('\n', _output);
            }
        }
    }

    /// <summary>Starts <paramref name="dll"/> (found next to this assembly) on 127.0.0.1:<paramref name="port"/>.</summary>
    public static SampleProcess Start(string name, string dll, int port, params string[] args)
    {
        string path = Path.Combine(AppContext.BaseDirectory, dll);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{dll} is not next to {AppContext.BaseDirectory}; the project must reference the sample so it is built.", path);
        }

        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(path);
        start.ArgumentList.Add("--port");
        start.ArgumentList.Add(port.ToString(CultureInfo.InvariantCulture));
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["Logging__LogLevel__Default"] = "Warning";
        start.Environment["Logging__LogLevel__Batching.Samples.Gateway"] = "Information";
        start.Environment["DOTNET_TieredPGO"] = "0";
        var process = Process.Start(start) ?? throw new InvalidOperationException($"dotnet {dll} did not start.");
        var sample = new SampleProcess(process, name, port);
        process.OutputDataReceived += (_, e) => sample.Keep(e.Data);
        process.ErrorDataReceived += (_, e) => sample.Keep(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return sample;
    }

    /// <summary>Polls <c>/healthz</c> until it answers 200, within <paramref name="patience"/>.</summary>
    public async Task WaitReadyAsync(HttpClient client, TimeSpan patience)
    {
        using var timeout = new CancellationTokenSource(patience);
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"{Name} exited with {_process.ExitCode} before it was ready:\n{Output}");
            }

            try
            {
                using HttpResponseMessage response = await client.GetAsync(new Uri(Address, "healthz"), timeout.Token);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested)
            {
                throw new TimeoutException($"{Name} was not ready within {patience}:\n{Output}");
            }

            await Task.Delay(50, timeout.Token).ConfigureAwait(false);
        }
    }

    /// <summary>Ends the process at once (SIGKILL): no drain, its connections reset.</summary>
    public void Kill()
    {
        try
        {
            _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }

        _process.WaitForExit(10_000);
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }

    /// <summary>A port that was free a moment ago on 127.0.0.1.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private void Keep(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.Enqueue(line);
            while (_output.Count > 40)
            {
                _output.Dequeue();
            }
        }
    }
}

/// <summary>What one request came to.</summary>
internal enum Outcome
{
    /// <summary>200 with the right outputs for its input.</summary>
    Succeeded,

    /// <summary>An error status with a problem-details body saying why.</summary>
    ClearError,

    /// <summary>200 with outputs that are not its input's.</summary>
    Wrong,

    /// <summary>No answer (a reset, a timeout) or an answer that explains nothing.</summary>
    Lost,
}

internal readonly record struct Sample(long StartedAt, TimeSpan Latency, Outcome Outcome, int Status, string? Detail);

/// <summary>Requests with known answers: a few fixed inputs and the outputs the sample's model gives them.</summary>
internal sealed class Workload
{
    private readonly (string Body, float[] Expected)[] _cases;

    public Workload(int count = 16, int seed = 1)
    {
        var model = new ModelOptions();
        float[] parameters = model.CreateParameters();
        var random = new Random(seed);
        _cases = new (string, float[])[count];
        for (int i = 0; i < count; i++)
        {
            float[] input = [.. Enumerable.Range(0, model.InputWidth).Select(_ => (float)((random.NextDouble() * 2) - 1))];
            var expected = new float[model.OutputWidth];
            new DenseReluKernel().ApplyRow(input, expected, parameters);
            _cases[i] = (JsonSerializer.Serialize(new { features = input }), expected);
        }
    }

    public async Task<Sample> SendAsync(HttpClient client, Uri endpoint, int index, CancellationToken cancellationToken)
    {
        (string body, float[] expected) = _cases[index % _cases.Length];
        long start = Stopwatch.GetTimestamp();
        try
        {
            using var content = new StringContent(body, Encoding.UTF8, "application/json");
            using HttpResponseMessage response = await client.PostAsync(endpoint, content, cancellationToken);
            string text = await response.Content.ReadAsStringAsync(cancellationToken);
            TimeSpan latency = Stopwatch.GetElapsedTime(start);
            int status = (int)response.StatusCode;
            if (response.StatusCode != HttpStatusCode.OK)
            {
                bool clear = response.Content.Headers.ContentType?.MediaType == "application/problem+json" && text.Contains("\"detail\"", StringComparison.Ordinal);
                return new Sample(start, latency, clear ? Outcome.ClearError : Outcome.Lost, status, text);
            }

            using JsonDocument json = JsonDocument.Parse(text);
            float[] outputs = [.. json.RootElement.GetProperty("outputs").EnumerateArray().Select(e => e.GetSingle())];
            bool right = outputs.Length == expected.Length && outputs.Zip(expected).All(p => Math.Abs(p.First - p.Second) <= 1e-4 * Math.Max(1, Math.Abs(p.Second)));
            return new Sample(start, latency, right ? Outcome.Succeeded : Outcome.Wrong, status, null);
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException or JsonException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return new Sample(start, Stopwatch.GetElapsedTime(start), Outcome.Lost, 0, ex.GetType().Name + ": " + ex.Message);
        }
    }

    /// <summary><paramref name="workers"/> callers, each sending its next request when the last is answered, until
    /// <paramref name="requests"/> have been sent; <paramref name="progress"/> sees the count of completed requests.</summary>
    public async Task<Sample[]> ClosedLoopAsync(HttpClient client, Uri endpoint, int workers, int requests, CancellationToken cancellationToken,
        Action<int>? progress = null)
    {
        var samples = new Sample[requests];
        int next = -1, done = 0;
        await Task.WhenAll(Enumerable.Range(0, workers).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < requests)
            {
                samples[i] = await SendAsync(client, endpoint, i, cancellationToken);
                progress?.Invoke(Interlocked.Increment(ref done));
            }
        }, cancellationToken)));
        return samples;
    }

    /// <summary>As <see cref="ClosedLoopAsync"/>, until <paramref name="stop"/> is cancelled; every request sent is in the result.</summary>
    public async Task<Sample[]> ClosedLoopUntilAsync(HttpClient client, Uri endpoint, int workers, CancellationToken stop, CancellationToken cancellationToken,
        Action<int>? progress = null)
    {
        var samples = new System.Collections.Concurrent.ConcurrentQueue<Sample>();
        int next = -1;
        await Task.WhenAll(Enumerable.Range(0, workers).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                samples.Enqueue(await SendAsync(client, endpoint, Interlocked.Increment(ref next), cancellationToken));
                progress?.Invoke(samples.Count);
            }
        }, cancellationToken)));
        return [.. samples];
    }

    /// <summary>Requests sent at <paramref name="perSecond"/> (Poisson arrivals) for <paramref name="duration"/>, each
    /// answered or not in its own time: the load does not slow down when the cluster does.</summary>
    public async Task<Sample[]> OpenLoopAsync(HttpClient client, Uri endpoint, double perSecond, TimeSpan duration, int seed, CancellationToken cancellationToken)
    {
        var random = new Random(seed);
        var pending = new List<Task<Sample>>();
        long start = Stopwatch.GetTimestamp();
        double at = 0;
        int index = 0;
        while (at < duration.TotalSeconds)
        {
            at += -Math.Log(1 - random.NextDouble()) / perSecond;
            TimeSpan wait = TimeSpan.FromSeconds(at) - Stopwatch.GetElapsedTime(start);
            if (wait > TimeSpan.FromMilliseconds(1))
            {
                await Task.Delay(wait, cancellationToken);
            }

            int i = index++;
            pending.Add(Task.Run(() => SendAsync(client, endpoint, i, cancellationToken), cancellationToken));
        }

        return await Task.WhenAll(pending);
    }
}

/// <summary>Latency percentiles over the samples that succeeded.</summary>
internal static class Stats
{
    public static double PercentileMs(IEnumerable<Sample> samples, double percentile)
    {
        double[] sorted = [.. samples.Where(s => s.Outcome == Outcome.Succeeded).Select(s => s.Latency.TotalMilliseconds).Order()];
        if (sorted.Length == 0)
        {
            return double.NaN;
        }

        int rank = (int)Math.Ceiling(percentile / 100 * sorted.Length) - 1;
        return sorted[Math.Clamp(rank, 0, sorted.Length - 1)];
    }
}

/// <summary>Reads one series from a Prometheus text exposition.</summary>
internal static class Prometheus
{
    /// <summary>The sum of the samples of <paramref name="metric"/> whose labels contain every one of <paramref name="labels"/>; 0 when none.</summary>
    public static double Sum(string exposition, string metric, params string[] labels)
    {
        double sum = 0;
        foreach (string line in exposition.Split('\n'))
        {
            if (line.StartsWith(metric + "{", StringComparison.Ordinal) && labels.All(l => line.Contains(l, StringComparison.Ordinal)))
            {
                sum += double.Parse(line.AsSpan(line.LastIndexOf(' ') + 1), CultureInfo.InvariantCulture);
            }
        }

        return sum;
    }

    public static string Instance(Uri address) => $"batching_gateway_instance=\"{address}\"";
}

/// <summary>The heterogeneous cluster of the tests and the benchmark: two fast instances and one four times slower.</summary>
/// <remarks>Small batches (4 items) and a simulated 40 ms device keep the cluster's capacity (2 slots × 4 items per
/// 40 ms per fast instance, a quarter of that for the slow one: about 450 requests/s) within what the gateway, the
/// instances and the load generator can drive together on a busy 2-core machine, and make device time, not CPU
/// stalls, dominate latency.</remarks>
internal static class ClusterShape
{
    public const int MaxBatchSize = 4;
    public const double BatchMs = 40;
    public const int Slots = 2;
    public const double SlowFactor = 4;

    /// <summary>Items per second the three instances can serve at most.</summary>
    public static double CapacityPerSecond => Slots * MaxBatchSize * 1000 / BatchMs * (2 + (1 / SlowFactor));

    /// <summary>Queue capacity: a quarter of the default, so an overloaded instance turns Degraded (and refuses) within seconds.</summary>
    public const int QueueCapacity = 256;

    public static string[] InstanceArgs(bool slow) =>
    [
        "--Batching:QueueCapacity", QueueCapacity.ToString(CultureInfo.InvariantCulture),
        "--Batching:MaxBatchSize", MaxBatchSize.ToString(CultureInfo.InvariantCulture),
        "--Inference:BatchDelayMs", BatchMs.ToString(CultureInfo.InvariantCulture),
        "--Inference:SlowdownFactor", (slow ? SlowFactor : 1).ToString(CultureInfo.InvariantCulture),
    ];

    /// <summary>A gateway's arguments: the instances, the policy, and quick health checks (so a test sees changes soon).</summary>
    public static string[] GatewayArgs(string policy, params Uri[] instances) =>
    [
        .. instances.SelectMany((uri, i) => new[] { $"--Gateway:Instances:{i}", uri.ToString() }),
        "--Gateway:Policy", policy,
        "--Gateway:HealthIntervalMs", "200",
        "--Gateway:ReactivationMs", "1000",
    ];
}
