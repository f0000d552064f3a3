using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Batching.Samples.EmbeddingService;
using Batching.Samples.EmbeddingService.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

// One model per test class is loaded (about a second); classes run one after another so they do not compete for the cores.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Batching.EmbeddingService.Tests;

/// <summary>The service, started in-process on a free 127.0.0.1 port, with its inner generator wrapped in a <see cref="GatedGenerator"/>.</summary>
internal sealed class RunningServer : IAsyncDisposable
{
    /// <summary>Bounds every wait in these tests, so a bug fails a test instead of hanging the run.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    /// <summary>The processor's name: the inner generator's metadata, provider/model.</summary>
    public const string ProcessorName = MiniLmEmbeddingGenerator.ProviderName + "/" + MiniLmModel.ModelId;

    private readonly WebApplication _app;

    private RunningServer(WebApplication app, Uri address, GatedGenerator gate)
    {
        _app = app;
        Address = address;
        Gate = gate;
        Client = new HttpClient { BaseAddress = address, Timeout = Patience };
    }

    public Uri Address { get; }

    public HttpClient Client { get; }

    public GatedGenerator Gate { get; }

    public MiniLmModel Model => _app.Services.GetRequiredService<MiniLmModel>();

    public static async Task<RunningServer> StartAsync(params string[] args)
    {
        GatedGenerator? gate = null;
        WebApplication app = EmbeddingApp.Build(["--port", "0", "--Model:IntraOpThreads", "1", .. args], builder =>
        {
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
            builder.Services.AddKeyedSingleton<IEmbeddingGenerator<string, Embedding<float>>>(EmbeddingApp.InnerKey,
                (sp, _) => gate = new GatedGenerator(new MiniLmEmbeddingGenerator(sp.GetRequiredService<MiniLmModel>())));
        });
        await app.StartAsync().WaitAsync(Patience);
        string url = app.Urls.Single();
        Assert.StartsWith("http://127.0.0.1:", url, StringComparison.Ordinal);
        return new RunningServer(app, new Uri(url), gate!);
    }

    public Task<HttpResponseMessage> PostAsync(string json, CancellationToken cancellationToken = default) =>
        Client.PostAsync("/v1/embeddings", new StringContent(json, Encoding.UTF8, "application/json"), cancellationToken);

    public Task<HttpResponseMessage> EmbedAsync(object input, CancellationToken cancellationToken = default) =>
        PostAsync(JsonSerializer.Serialize(new { input, model = MiniLmModel.ModelId }), cancellationToken);

    public Task<string> MetricsAsync() => Prometheus.ScrapeAsync(Client);

    /// <summary>Polls /metrics until <paramref name="metric"/> of the processor (and <paramref name="label"/>) reads <paramref name="expected"/>.</summary>
    public Task WaitForMetricAsync(string metric, double expected, string? label = null) =>
        Prometheus.WaitForAsync(Client, metric, ProcessorName, expected, label, Patience);

    public async ValueTask DisposeAsync()
    {
        Gate.Open();
        Client.Dispose();
        await _app.StopAsync().WaitAsync(Patience);
        await _app.DisposeAsync();
    }
}

/// <summary>
/// The model's generator, recording each call's values; after <see cref="Hold"/>, the next call waits until
/// <see cref="Open"/>, so the tests choose what queues behind a running batch instead of racing for it.
/// </summary>
internal sealed class GatedGenerator(IEmbeddingGenerator<string, Embedding<float>> inner) : DelegatingEmbeddingGenerator<string, Embedding<float>>(inner)
{
    private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource? _gate;

    public ConcurrentQueue<string[]> Calls { get; } = new();

    public Task Entered => _entered.Task;

    public void Hold() => _gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Open() => _gate?.TrySetResult();

    public override async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values,
        EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        string[] texts = [.. values];
        Calls.Enqueue(texts);
        if (_gate is { } gate)
        {
            _entered.TrySetResult();
            await gate.Task.WaitAsync(RunningServer.Patience, cancellationToken);
        }

        return await base.GenerateAsync(texts, options, cancellationToken);
    }
}

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

internal static class Vectors
{
    public static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            na += (double)a[i] * a[i];
            nb += (double)b[i] * b[i];
        }

        return dot / Math.Sqrt(na * nb);
    }
}
