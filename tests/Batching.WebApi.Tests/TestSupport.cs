using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Batching.Samples.WebApi;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Batching.WebApi.Tests;

/// <summary>The sample app, started in-process on a free 127.0.0.1 port, with a client bound to it.</summary>
internal sealed class RunningServer : IAsyncDisposable
{
    /// <summary>Bounds every wait in these tests, so a bug fails a test instead of hanging the run.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    private readonly WebApplication _app;

    private RunningServer(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
        Client = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(1) })
        {
            BaseAddress = address,
            Timeout = TimeSpan.FromSeconds(30),
        };
    }

    public Uri Address { get; }

    public HttpClient Client { get; }

    public IServiceProvider Services => _app.Services;

    public static async Task<RunningServer> StartAsync(Action<WebApplicationBuilder>? configure = null, params string[] args)
    {
        WebApplication app = InferenceApp.Build(["--port", "0", .. args], builder =>
        {
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
            configure?.Invoke(builder);
        });
        await app.StartAsync().WaitAsync(Patience);
        string url = app.Urls.Single();
        Assert.StartsWith("http://127.0.0.1:", url, StringComparison.Ordinal);
        Assert.DoesNotContain(":0", url.AsSpan(url.LastIndexOf(':')).ToString(), StringComparison.Ordinal);
        return new RunningServer(app, new Uri(url));
    }

    public static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    public static StringContent Features(float[] features) =>
        Json(JsonSerializer.Serialize(new { features }));

    public Task<HttpResponseMessage> InferAsync(float[] features, string path = "/v1/infer", CancellationToken cancellationToken = default) =>
        Client.PostAsync(path, Features(features), cancellationToken);

    /// <summary>Posts <paramref name="body"/> (an object serialized as JSON, e.g. <c>new { features, priority = 1 }</c>).</summary>
    public Task<HttpResponseMessage> PostAsync(object body, string path = "/v1/infer") =>
        Client.PostAsync(path, Json(JsonSerializer.Serialize(body)));

    public Task<string> MetricsAsync() => Prometheus.ScrapeAsync(Client);

    /// <summary>Polls /metrics until the sample named <paramref name="metric"/> for <paramref name="processor"/>
    /// (and <paramref name="label"/>, if given) reads <paramref name="expected"/>.</summary>
    public Task WaitForMetricAsync(string metric, string processor, double expected, string? label = null) =>
        Prometheus.WaitForAsync(Client, metric, processor, expected, label, Patience);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await _app.StopAsync().WaitAsync(Patience);
        await _app.DisposeAsync();
    }
}

/// <summary>The model computed the plain way, in double precision, to check the service's answers against.</summary>
internal static class Reference
{
    public static readonly ModelOptions Model = new();

    private static readonly float[] Parameters = Model.CreateParameters();

    public static float[] Dense(ReadOnlySpan<float> input)
    {
        int outputWidth = Model.OutputWidth;
        var output = new float[outputWidth];
        for (int j = 0; j < outputWidth; j++)
        {
            double sum = Parameters[(input.Length * outputWidth) + j];
            for (int k = 0; k < input.Length; k++)
            {
                sum += (double)input[k] * Parameters[(k * outputWidth) + j];
            }

            output[j] = (float)Math.Max(sum, 0);
        }

        return output;
    }

    public static float[] RandomFeatures(Random random) =>
        [.. Enumerable.Range(0, Model.InputWidth).Select(_ => (float)((random.NextDouble() * 2) - 1))];

    /// <summary>Random features whose first value is 0.5, so a test can tell whether the model ever saw them
    /// (<see cref="GatedModel.Seen"/>).</summary>
    public static float[] Marked(Random random)
    {
        float[] features = RandomFeatures(random);
        features[0] = MarkValue;
        return features;
    }

    public const float MarkValue = 0.5f;

    public static void AssertClose(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double tolerance = 1e-4 * Math.Max(1, Math.Abs(expected[i]));
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"outputs[{i}] was {actual[i]}; the reference is {expected[i]}.");
        }
    }

    public static async Task<float[]> OutputsAsync(HttpResponseMessage response)
    {
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.OK, $"{(int)response.StatusCode}: {body}");
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using JsonDocument json = JsonDocument.Parse(body);
        return [.. json.RootElement.GetProperty("outputs").EnumerateArray().Select(e => e.GetSingle())];
    }

    /// <summary>The outputs of a multi-vector request: an array of output vectors.</summary>
    public static async Task<float[][]> ManyOutputsAsync(HttpResponseMessage response)
    {
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.OK, $"{(int)response.StatusCode}: {body}");
        using JsonDocument json = JsonDocument.Parse(body);
        return [.. json.RootElement.GetProperty("outputs").EnumerateArray().Select(row => row.EnumerateArray().Select(e => e.GetSingle()).ToArray())];
    }
}

/// <summary>A problem-details body as the tests read it.</summary>
internal sealed record Problem(int Status, string Title, string Detail)
{
    public static async Task<Problem> ReadAsync(HttpResponseMessage response)
    {
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using JsonDocument json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        JsonElement root = json.RootElement;
        return new Problem(root.GetProperty("status").GetInt32(), root.GetProperty("title").GetString()!, root.GetProperty("detail").GetString()!);
    }
}

/// <summary>The X-Batching-Load header, read the way a router would: split on ',' and then on the first '='.</summary>
internal static class LoadReport
{
    public static Dictionary<string, double> Read(HttpResponseMessage response)
    {
        Assert.True(response.Headers.TryGetValues("X-Batching-Load", out IEnumerable<string>? values),
            $"{(int)response.StatusCode} has no X-Batching-Load header.");
        string value = Assert.Single(values);
        var members = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string member in value.Split(','))
        {
            string[] pair = member.Trim().Split('=', 2);
            Assert.True(pair.Length == 2, $"'{member}' in '{value}' is not key=value.");
            members.Add(pair[0], double.Parse(pair[1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture));
        }

        foreach (string key in new[] { "queued", "waiting", "in_flight", "slots", "capacity", "estimated_wait_ms" })
        {
            Assert.True(members.ContainsKey(key), $"'{value}' lacks {key}.");
        }

        return members;
    }
}

/// <summary>The reference model behind a gate: the first batch blocks until <see cref="Open"/>.</summary>
internal sealed class GatedModel
{
    private readonly TaskCompletionSource _gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ConcurrentQueue<int> _batchSizes = new();
    private readonly ConcurrentQueue<float[]> _seen = new();

    public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public int[] BatchSizes => [.. _batchSizes];

    public float[][] Seen => [.. _seen];

    public void Open() => _gate.TrySetResult();

    /// <summary>Sends <paramref name="features"/> and waits until its batch holds the only slot; returns its response.</summary>
    public async Task<Task<HttpResponseMessage>> HoldSlotAsync(RunningServer server, float[] features)
    {
        Task<HttpResponseMessage> running = server.InferAsync(features);
        await Entered.Task.WaitAsync(RunningServer.Patience);
        return running;
    }

    /// <summary>The sample with this model as its batched processor (one slot, Reject mode, no delay).</summary>
    public Task<RunningServer> StartServerAsync(string name, int maxBatchSize, int? queueCapacity = null, int priorityLevels = 1) =>
        RunningServer.StartAsync(builder => builder.Services.AddBatching().AddProcessor<ReadOnlyMemory<float>, float[]>(HandleAsync, o =>
        {
            o.Name = name;
            o.MaxBatchSize = maxBatchSize;
            o.QueueCapacity = queueCapacity ?? maxBatchSize;
            o.QueueFullMode = QueueFullMode.Reject;
            o.MaxDelay = TimeSpan.Zero;
            o.PriorityLevels = priorityLevels;
        }));

    public async ValueTask HandleAsync(ReadOnlyMemory<ReadOnlyMemory<float>> inputs, Memory<float[]> outputs, CancellationToken cancellationToken)
    {
        _batchSizes.Enqueue(inputs.Length);
        foreach (ReadOnlyMemory<float> row in inputs.Span)
        {
            _seen.Enqueue(row.ToArray());
        }

        Entered.TrySetResult();
        await _gate.Task.WaitAsync(cancellationToken);
        for (int i = 0; i < inputs.Length; i++)
        {
            outputs.Span[i] = Reference.Dense(inputs.Span[i].Span);
        }
    }
}
