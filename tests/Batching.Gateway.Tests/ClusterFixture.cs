[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Batching.Gateway.Tests;

/// <summary>Three WebApi instances (fast, fast, 4× slower) and one gateway per compared policy, each its own process on
/// a free 127.0.0.1 port, started once (in parallel) for every test of the collection.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    /// <summary>Bounds every wait on a process, so a bug fails a test instead of hanging the run.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    public static readonly string[] Policies = ["LoadAware", "RoundRobin", "PowerOfTwoChoices"];

    private SampleProcess[] _processes = [];

    public HttpClient Client { get; } = new(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(1), ConnectTimeout = TimeSpan.FromSeconds(5) })
    {
        Timeout = TimeSpan.FromSeconds(30),
    };

    internal SampleProcess[] Instances { get; private set; } = [];

    /// <summary>The slow instance (the third).</summary>
    internal SampleProcess Slow => Instances[2];

    /// <summary>The gateway of each of <see cref="Policies"/>.</summary>
    internal Dictionary<string, SampleProcess> Gateways { get; } = new(StringComparer.Ordinal);

    public async Task InitializeAsync()
    {
        // Ports are taken first so the gateways can name the instances; every process starts at once.
        int[] ports = [SampleProcess.FreePort(), SampleProcess.FreePort(), SampleProcess.FreePort()];
        Uri[] addresses = [.. ports.Select(p => new Uri($"http://127.0.0.1:{p}/"))];
        var all = new List<SampleProcess>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                all.Add(SampleProcess.Start($"instance {i}", SampleProcess.WebApiDll, ports[i], ClusterShape.InstanceArgs(slow: i == 2)));
            }

            foreach (string policy in Policies)
            {
                SampleProcess gateway = SampleProcess.Start($"gateway ({policy})", SampleProcess.GatewayDll, SampleProcess.FreePort(), ClusterShape.GatewayArgs(policy, addresses));
                all.Add(gateway);
                Gateways[policy] = gateway;
            }

            await Task.WhenAll(all.Select(p => p.WaitReadyAsync(Client, Patience)));
            Instances = [.. all.Take(3)];
            _processes = [.. all];
        }
        catch
        {
            all.ForEach(p => p.Dispose());
            throw;
        }
    }

    /// <summary>Replaces instance <paramref name="index"/> (after it was killed) with a new process on the same port.</summary>
    internal async Task RestartAsync(int index)
    {
        SampleProcess old = Instances[index];
        old.Dispose();
        SampleProcess replacement = SampleProcess.Start(old.Name, SampleProcess.WebApiDll, old.Port, ClusterShape.InstanceArgs(slow: index == 2));
        Instances[index] = replacement;
        _processes = [.. _processes.Select(p => p == old ? replacement : p)];
        await replacement.WaitReadyAsync(Client, Patience);
    }

    public Task DisposeAsync()
    {
        foreach (SampleProcess process in _processes)
        {
            process.Dispose();
        }

        Client.Dispose();
        return Task.CompletedTask;
    }
}

[CollectionDefinition(Name)]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>
{
    public const string Name = "cluster";
}
