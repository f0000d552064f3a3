// The gateway benchmark (issue 13): the three-instance cluster of the gateway tests (two fast instances, one 4x slower),
// one gateway per policy, open-loop Poisson load at 50/90/120% of the cluster's measured capacity; per policy throughput
// and p50/p99. Then the gateway's own overhead: one client, one request at a time, direct to an instance vs through a
// gateway in front of it. Writes benchmarks/results/gateway.md and gateway.png. Reports, never asserts.
//
//   dotnet run -c Release --project benchmarks/Batching.Gateway.Bench -- [--seconds S] [--loads 50,90,120] [--quick] [--out DIR]
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Batching.Benchmarks;
using Batching.Gateway.Tests;
using ScottPlot;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
var inv = CultureInfo.InvariantCulture;
bool quick = args.Contains("--quick");
double seconds = Option("--seconds", quick ? 1 : 8);
double[] loads = [.. (OptionText("--loads") ?? (quick ? "50" : "50,90,120")).Split(',').Select(s => double.Parse(s, inv))];
string output = OptionText("--out") ?? Paths.Results;
string command = "dotnet run -c Release --project benchmarks/Batching.Gateway.Bench -- " + string.Join(' ', args);
string[] policies = ["LoadAware", "RoundRobin", "PowerOfTwoChoices"];
Machine.LoadAverageAtStart = Machine.LoadAverage();
var clock = Stopwatch.StartNew();

using var client = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5), ConnectTimeout = TimeSpan.FromSeconds(5) })
{
    Timeout = TimeSpan.FromSeconds(60),
};
TimeSpan patience = TimeSpan.FromSeconds(60);
int[] ports = [SampleProcess.FreePort(), SampleProcess.FreePort(), SampleProcess.FreePort(), SampleProcess.FreePort()];
Uri[] cluster = [.. ports.Take(3).Select(p => new Uri($"http://127.0.0.1:{p}/"))];
Uri plain = new($"http://127.0.0.1:{ports[3]}/");
var processes = new List<SampleProcess>();
try
{
    for (int i = 0; i < 3; i++)
    {
        processes.Add(SampleProcess.Start($"instance {i}", SampleProcess.WebApiDll, ports[i], ClusterShape.InstanceArgs(slow: i == 2)));
    }

    // The overhead pair: an instance on the real (CPU) device, no simulated delay, and a gateway over it alone.
    processes.Add(SampleProcess.Start("plain instance", SampleProcess.WebApiDll, ports[3]));
    var gateways = new Dictionary<string, SampleProcess>(StringComparer.Ordinal);
    foreach (string policy in policies)
    {
        gateways[policy] = SampleProcess.Start($"gateway ({policy})", SampleProcess.GatewayDll, SampleProcess.FreePort(), ClusterShape.GatewayArgs(policy, cluster));
        processes.Add(gateways[policy]);
    }

    SampleProcess overheadGateway = SampleProcess.Start("gateway (plain)", SampleProcess.GatewayDll, SampleProcess.FreePort(), ClusterShape.GatewayArgs("LoadAware", plain));
    processes.Add(overheadGateway);
    await Task.WhenAll(processes.Select(p => p.WaitReadyAsync(client, patience)));

    var workload = new Workload();
    using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(quick ? 3 : 15));
    CancellationToken token = timeout.Token;

    // Capacity: each instance saturated on its own (closed loop, 4x its batch slots in callers), summed.
    Console.WriteLine("Measuring capacity...");
    var capacities = new double[3];
    for (int i = 0; i < 3; i++)
    {
        Uri infer = new(cluster[i], "v1/infer");
        _ = await workload.ClosedLoopAsync(client, infer, 16, quick ? 32 : 200, token);
        long start = Stopwatch.GetTimestamp();
        int requests = (int)((i == 2 ? 150 : 600) * (quick ? 0.2 : Math.Max(1, seconds / 4)));
        Sample[] saturated = await workload.ClosedLoopAsync(client, infer, 4 * ClusterShape.Slots * ClusterShape.MaxBatchSize, requests, token);
        capacities[i] = saturated.Count(s => s.Outcome == Outcome.Succeeded) / Stopwatch.GetElapsedTime(start).TotalSeconds;
        Console.WriteLine(string.Create(inv, $"  instance {i}: {capacities[i]:0} requests/s"));
    }

    double capacity = capacities.Sum();
    foreach (SampleProcess gateway in gateways.Values)
    {
        _ = await workload.ClosedLoopAsync(client, new Uri(gateway.Address, "v1/infer"), 16, quick ? 32 : 300, token);
    }

    var rows = new List<Row>();
    int seed = 1;
    foreach (double load in loads)
    {
        foreach (string policy in policies)
        {
            await DrainAsync(client, cluster, token);
            SampleProcess gateway = gateways[policy];
            string before = await client.GetStringAsync(new Uri(gateway.Address, "metrics"), token);
            double rate = capacity * load / 100;
            long start = Stopwatch.GetTimestamp();
            Sample[] samples = await workload.OpenLoopAsync(client, new Uri(gateway.Address, "v1/infer"), rate, TimeSpan.FromSeconds(seconds), seed++, token);
            double elapsed = Stopwatch.GetElapsedTime(start).TotalSeconds;
            string after = await client.GetStringAsync(new Uri(gateway.Address, "metrics"), token);
            double Delta(string metric, string label) => Prometheus.Sum(after, metric, label) - Prometheus.Sum(before, metric, label);
            double routed = cluster.Sum(u => Delta("batching_gateway_routed_total", Prometheus.Instance(u)));
            var row = new Row(policy, load, rate, samples.Count(s => s.Outcome == Outcome.Succeeded) / elapsed,
                Stats.PercentileMs(samples, 50), Stats.PercentileMs(samples, 99), samples.Length, samples.Count(s => s.Outcome != Outcome.Succeeded),
                Delta("batching_gateway_retries_total", ""), routed == 0 ? 0 : Delta("batching_gateway_routed_total", Prometheus.Instance(cluster[2])) / routed);
            rows.Add(row);
            Console.WriteLine(string.Create(inv,
                $"  {policy,-18} {load,4}%  {row.Throughput,6:0} req/s  p50 {row.P50,8:0.0} ms  p99 {row.P99,8:0.0} ms  errors {row.Errors}/{row.Sent}  retries {row.Retries}  to slow {row.SlowShare:P1}"));
        }
    }

    // Overhead: alternate direct and through-the-gateway rounds, so drift on a shared machine hits both alike.
    Console.WriteLine("Measuring gateway overhead...");
    var direct = new List<Sample>();
    var proxied = new List<Sample>();
    Uri directInfer = new(plain, "v1/infer"), proxiedInfer = new(overheadGateway.Address, "v1/infer");
    _ = await workload.ClosedLoopAsync(client, directInfer, 1, 200, token);
    _ = await workload.ClosedLoopAsync(client, proxiedInfer, 1, 200, token);
    for (int round = 0; round < (quick ? 1 : 6); round++)
    {
        direct.AddRange(await workload.ClosedLoopAsync(client, directInfer, 1, quick ? 50 : 400, token));
        proxied.AddRange(await workload.ClosedLoopAsync(client, proxiedInfer, 1, quick ? 50 : 400, token));
    }

    var overhead = new Overhead(Stats.PercentileMs(direct, 50), Stats.PercentileMs(proxied, 50), Stats.PercentileMs(direct, 99), Stats.PercentileMs(proxied, 99),
        direct.Count(s => s.Outcome != Outcome.Succeeded) + proxied.Count(s => s.Outcome != Outcome.Succeeded));
    Console.WriteLine(string.Create(inv, $"  direct p50 {overhead.DirectP50:0.000} ms, through the gateway p50 {overhead.GatewayP50:0.000} ms: +{overhead.GatewayP50 - overhead.DirectP50:0.000} ms"));

    Write(rows, capacities, overhead, clock.Elapsed);
    return 0;
}
finally
{
    foreach (SampleProcess process in processes)
    {
        process.Dispose();
    }
}

void Write(List<Row> rows, double[] capacities, Overhead overhead, TimeSpan took)
{
    StringBuilder page = ResultsPage.Start("Gateway: load-aware routing vs YARP's policies (issue 13)", command, quick, took);
    page.AppendLine().AppendLine(string.Create(inv,
        $"Three samples/WebApi instances as separate processes on 127.0.0.1: two fast, one {ClusterShape.SlowFactor}x slower (`Inference:SlowdownFactor`), each a simulated device of {ClusterShape.BatchMs} ms per batch (`Inference:BatchDelayMs`, a sleep: no CPU) with batches of at most {ClusterShape.MaxBatchSize} and {ClusterShape.Slots} in flight; one samples/Gateway process per policy in front of them. "
        + $"Open-loop Poisson arrivals for {seconds} s per point, at a percentage of the cluster's capacity measured first (each instance saturated alone): "
        + $"{string.Join(" + ", capacities.Select(c => c.ToString("0", inv)))} = {capacities.Sum():0} requests/s. Latency is client-side, of the requests that succeeded; errors are every other answer (503/502 with a problem body, or none)."));
    page.AppendLine().AppendLine("| Policy | Load | Offered (req/s) | Throughput (req/s) | p50 (ms) | p99 (ms) | Errors / sent | Retries | To the slow instance |")
        .AppendLine("|---|---|---|---|---|---|---|---|---|");
    foreach (Row r in rows.OrderBy(r => r.Load).ThenBy(r => Array.IndexOf(policies, r.Policy)))
    {
        page.AppendLine(string.Create(inv, $"| {r.Policy} | {r.Load}% | {r.Offered:0} | {r.Throughput:0} | {r.P50:0.0} | {r.P99:0.0} | {r.Errors} / {r.Sent} | {r.Retries} | {r.SlowShare:P1} |"));
    }

    page.AppendLine().AppendLine("![p50 and p99 per policy and load](gateway.png)").AppendLine();
    page.AppendLine(string.Create(inv,
        $"Gateway overhead: one client, one request at a time, to an instance on the real CPU device (no simulated delay), alternately direct and through a gateway over it alone; {(quick ? 1 : 6)} rounds of {(quick ? 50 : 400)} each way. "
        + $"p50 direct {overhead.DirectP50:0.000} ms, through the gateway {overhead.GatewayP50:0.000} ms (+{overhead.GatewayP50 - overhead.DirectP50:0.000} ms); p99 {overhead.DirectP99:0.000} ms and {overhead.GatewayP99:0.000} ms; {overhead.Errors} errors."));

    var checks = new StringBuilder();
    Row? aware = Find(rows, "LoadAware", 90), roundRobin = Find(rows, "RoundRobin", 90), p2c = Find(rows, "PowerOfTwoChoices", 90);
    if (aware is not null && roundRobin is not null && p2c is not null)
    {
        checks.AppendLine(ResultsPage.Line(aware.P99 <= 0.5 * roundRobin.P99, string.Create(inv,
            $"90% load: LoadAware p99 {aware.P99:0.0} ms <= 0.5 x RoundRobin's {roundRobin.P99:0.0} ms? ({aware.P99 / roundRobin.P99:0.00}x)")));
        checks.AppendLine(ResultsPage.Line(aware.P99 <= 0.8 * p2c.P99, string.Create(inv,
            $"90% load: LoadAware p99 {aware.P99:0.0} ms <= 0.8 x PowerOfTwoChoices' {p2c.P99:0.0} ms? ({aware.P99 / p2c.P99:0.00}x)")));
    }
    else
    {
        checks.AppendLine("INFO no 90% point in this run (--loads): the p99 targets are not checked.");
    }

    double added = overhead.GatewayP50 - overhead.DirectP50;
    checks.AppendLine(ResultsPage.Line(added <= 0.3, string.Create(inv, $"gateway overhead at p50 {added:0.000} ms <= 0.3 ms over direct calls?")));
    foreach (Row r in rows.Where(r => r.Errors > 0))
    {
        checks.AppendLine(string.Create(inv, $"INFO {r.Policy} at {r.Load}%: {r.Errors} of {r.Sent} requests answered with an error (no instance could take them)."));
    }

    page.AppendTargets(checks.ToString());
    Console.Write(checks);
    string name = "gateway";
    Plot(rows, Path.Combine(output, quick ? $"{name}-quick.png" : $"{name}.png"));
    ResultsPage.Write(page, output, name, quick);
}

void Plot(List<Row> rows, string path)
{
    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
    var plot = new Plot();
    ScottPlot.Color[] colors = [Colors.Green, Colors.Red, Colors.Blue];
    for (int i = 0; i < policies.Length; i++)
    {
        Row[] mine = [.. rows.Where(r => r.Policy == policies[i]).OrderBy(r => r.Load)];
        foreach ((string percentile, Func<Row, double> value, LinePattern pattern) in new (string, Func<Row, double>, LinePattern)[] { ("p99", r => r.P99, LinePattern.Solid), ("p50", r => r.P50, LinePattern.Dashed) })
        {
            var line = plot.Add.Scatter(mine.Select(r => r.Load).ToArray(), mine.Select(r => Math.Log10(Math.Max(0.1, value(r)))).ToArray());
            line.Color = colors[i];
            line.LinePattern = pattern;
            line.LegendText = $"{policies[i]} {percentile}";
        }
    }

    plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = y => Math.Pow(10, y).ToString("0.#", inv), MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator() };
    plot.XLabel("load (% of the cluster's measured capacity)");
    plot.YLabel("latency (ms, log scale)");
    plot.Title("Three instances (one 4x slower) behind the gateway");
    plot.ShowLegend(Edge.Right);
    plot.SavePng(path, 1100, 650);
}

static Row? Find(List<Row> rows, string policy, double load) => rows.FirstOrDefault(r => r.Policy == policy && r.Load == load);

// Between points: wait until every instance's queue is empty, so one point's backlog does not land on the next.
static async Task DrainAsync(HttpClient client, Uri[] instances, CancellationToken cancellationToken)
{
    using var patience = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
    patience.CancelAfter(TimeSpan.FromSeconds(60));
    foreach (Uri instance in instances)
    {
        while (Prometheus.Sum(await client.GetStringAsync(new Uri(instance, "metrics"), patience.Token), "batching_queue_depth", "batching_processor=\"infer\"") > 0)
        {
            await Task.Delay(100, patience.Token);
        }
    }

    await Task.Delay(500, cancellationToken);
}

double Option(string name, double fallback) => OptionText(name) is { } text ? double.Parse(text, inv) : fallback;

string? OptionText(string name)
{
    int at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
}

internal sealed record Row(string Policy, double Load, double Offered, double Throughput, double P50, double P99, int Sent, int Errors, double Retries, double SlowShare);

internal sealed record Overhead(double DirectP50, double GatewayP50, double DirectP99, double GatewayP99, int Errors);
