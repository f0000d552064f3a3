using System.Globalization;

namespace Batching.Samples.Gateway;

/// <summary>The gateway's settings, from the <c>Gateway</c> configuration section (or <c>--Gateway:Key value</c>).</summary>
public sealed class GatewayOptions
{
    /// <summary>The load-aware policy's name, and the default <see cref="Policy"/>.</summary>
    public const string LoadAware = "LoadAware";

    /// <summary>The policies <see cref="Policy"/> may name: the load-aware one and YARP's own, for comparison.</summary>
    public static readonly IReadOnlyList<string> Policies = [LoadAware, "PowerOfTwoChoices", "RoundRobin", "LeastRequests", "Random"];

    /// <summary>The instances' base URLs (<c>Gateway:Instances:0</c>, <c>Gateway:Instances:1</c>, ...); at least one.</summary>
    public IReadOnlyList<Uri> Instances { get; private init; } = [];

    /// <summary>The load balancing policy: <see cref="LoadAware"/> (the default) or one of YARP's (<see cref="Policies"/>).</summary>
    public string Policy { get; private init; } = LoadAware;

    /// <summary>How often every instance's <c>/healthz</c> is probed (<c>Gateway:HealthIntervalMs</c>, default 1000).</summary>
    public TimeSpan HealthInterval { get; private init; } = TimeSpan.FromSeconds(1);

    /// <summary>How long a probe may take before the instance counts as unhealthy (<c>Gateway:HealthTimeoutMs</c>, default 1000).</summary>
    public TimeSpan HealthTimeout { get; private init; } = TimeSpan.FromSeconds(1);

    /// <summary>How long an instance stays out after a transport failure before it may be tried again
    /// (<c>Gateway:ReactivationMs</c>, default 5000); the active probe brings it back no sooner than it answers.</summary>
    public TimeSpan Reactivation { get; private init; } = TimeSpan.FromSeconds(5);

    /// <summary>An instance whose last load report is older than this is polled for its load
    /// (<c>Gateway:LoadStaleMs</c>, default 500).</summary>
    public TimeSpan LoadStale { get; private init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Estimated waits within this of the lowest count as a tie, broken by two random choices
    /// (<c>Gateway:TieMs</c>, default 1).</summary>
    public TimeSpan Tie { get; private init; } = TimeSpan.FromMilliseconds(1);

    /// <summary>Whether each instance URL's host name is resolved to all of its addresses, one instance per address, and
    /// re-resolved every <see cref="DnsRefresh"/> (<c>Gateway:ResolveDns</c>, default false): for a Kubernetes headless
    /// Service, whose name resolves to every ready pod.</summary>
    public bool ResolveDns { get; private init; }

    /// <summary>How often names are resolved again with <see cref="ResolveDns"/> (<c>Gateway:DnsRefreshMs</c>, default 5000).</summary>
    public TimeSpan DnsRefresh { get; private init; } = TimeSpan.FromSeconds(5);

    /// <summary>The longest request body the gateway buffers for a retry (<c>Gateway:MaxBodyBytes</c>, default 4 MiB).</summary>
    public int MaxBodyBytes { get; private init; } = 4 << 20;

    /// <summary>Reads and checks the section; a bad value fails here, naming its key.</summary>
    /// <param name="section">The <c>Gateway</c> section.</param>
    /// <returns>The options.</returns>
    /// <exception cref="ArgumentException">A value is missing or out of range; the message names the key.</exception>
    public static GatewayOptions Read(IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(section);
        var instances = new List<Uri>();
        foreach (IConfigurationSection entry in section.GetSection("Instances").GetChildren().OrderBy(e => Index(e.Key)))
        {
            if (!Uri.TryCreate(entry.Value, UriKind.Absolute, out Uri? uri) || uri.Scheme is not ("http" or "https") || uri.PathAndQuery != "/")
            {
                throw new ArgumentException($"Gateway:Instances:{entry.Key} must be an instance's base URL such as http://127.0.0.1:5081; it was '{entry.Value}'.");
            }

            if (instances.Contains(uri))
            {
                throw new ArgumentException($"Gateway:Instances:{entry.Key} repeats {uri}; list every instance once.");
            }

            instances.Add(uri);
        }

        if (instances.Count == 0)
        {
            throw new ArgumentException("Gateway:Instances is empty; give each instance's base URL, e.g. --Gateway:Instances:0 http://127.0.0.1:5081 --Gateway:Instances:1 http://127.0.0.1:5082.");
        }

        string policy = section["Policy"] is { Length: > 0 } name
            ? Policies.FirstOrDefault(p => string.Equals(p, name, StringComparison.OrdinalIgnoreCase))
                ?? throw new ArgumentException($"Gateway:Policy must be one of {string.Join(", ", Policies)}; it was '{name}'.")
            : LoadAware;

        return new GatewayOptions
        {
            Instances = instances,
            Policy = policy,
            HealthInterval = Milliseconds(section, "HealthIntervalMs", 1000, 10, 600_000),
            HealthTimeout = Milliseconds(section, "HealthTimeoutMs", 1000, 10, 600_000),
            Reactivation = Milliseconds(section, "ReactivationMs", 5000, 10, 3_600_000),
            LoadStale = Milliseconds(section, "LoadStaleMs", 500, 10, 3_600_000),
            Tie = Milliseconds(section, "TieMs", 1, 0, 60_000),
            MaxBodyBytes = (int)Number(section, "MaxBodyBytes", 4 << 20, 1024, 1 << 30),
            ResolveDns = Flag(section, "ResolveDns"),
            DnsRefresh = Milliseconds(section, "DnsRefreshMs", 5000, 100, 3_600_000),
        };
    }

    private static int Index(string key) => int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int index)
        ? index
        : throw new ArgumentException($"Gateway:Instances:{key} is not an index; list instances as Gateway:Instances:0, Gateway:Instances:1, ...");

    private static bool Flag(IConfiguration section, string key) => section[key] switch
    {
        null or "" => false,
        { } text when bool.TryParse(text, out bool value) => value,
        { } text => throw new ArgumentException($"Gateway:{key} must be true or false; it was '{text}'."),
    };

    private static TimeSpan Milliseconds(IConfiguration section, string key, double fallback, double min, double max) =>
        TimeSpan.FromMilliseconds(Number(section, key, fallback, min, max));

    private static double Number(IConfiguration section, string key, double fallback, double min, double max)
    {
        string? text = section[key];
        if (string.IsNullOrWhiteSpace(text))
        {
            return fallback;
        }

        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || value < min || value > max)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Gateway:{key} must be a number from {min} to {max}; it was '{text}'."));
        }

        return value;
    }
}
