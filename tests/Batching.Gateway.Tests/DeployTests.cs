using Batching.Samples.Gateway;
using Microsoft.Extensions.Configuration;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.Serialization;

namespace Batching.Gateway.Tests;

/// <summary>samples/Gateway/deploy/*.yaml: valid YAML, and consistent with each other and with the running apps (probe
/// paths that answer, metric names that exist, arguments the gateway accepts). The manifests are never applied here.</summary>
[Collection(ClusterCollection.Name)]
public sealed class DeployTests(ClusterFixture cluster)
{
    private static readonly string Folder = Path.Combine(AppContext.BaseDirectory, "deploy");

    [Fact]
    public void Every_document_parses_and_names_its_kind()
    {
        List<(string File, Dictionary<object, object> Doc)> docs = Documents();
        Assert.Equal(["gateway.yaml", "infer.yaml", "prometheus-adapter.yaml"], docs.Select(d => d.File).Distinct().Order(StringComparer.Ordinal));
        Assert.All(docs, d =>
        {
            Assert.False(string.IsNullOrEmpty(Text(d.Doc, "apiVersion")), d.File);
            Assert.False(string.IsNullOrEmpty(Text(d.Doc, "kind")), d.File);
            Assert.False(string.IsNullOrEmpty(Text(d.Doc, "metadata", "name")), d.File);
        });
    }

    [Fact]
    public void The_inference_deployment_asks_for_a_gpu_and_probes_what_the_app_serves()
    {
        Dictionary<object, object> deployment = Find("Deployment", "batching-infer");
        Dictionary<object, object> container = Container(deployment);
        Assert.Equal("1", Text(container, "resources", "requests", "nvidia.com/gpu"));
        Assert.Equal("1", Text(container, "resources", "limits", "nvidia.com/gpu"));

        string port = PortArgument(container);
        Assert.Equal(port, Text(Port(container), "containerPort"));
        Assert.Equal("/healthz", Text(container, "readinessProbe", "httpGet", "path"));
        Assert.Equal("http", Text(container, "readinessProbe", "httpGet", "port"));
        Assert.Equal("http", Text(container, "livenessProbe", "tcpSocket", "port"));
        Assert.Equal("/metrics", Text(deployment, "spec", "template", "metadata", "annotations", "prometheus.io/path"));
        Assert.Equal(port, Text(deployment, "spec", "template", "metadata", "annotations", "prometheus.io/port"));
    }

    [Fact]
    public void Services_select_their_deployments_pods_and_target_the_named_port()
    {
        foreach ((string service, string deployment) in new[] { ("batching-infer", "batching-infer"), ("batching-infer-pods", "batching-infer"), ("batching-gateway", "batching-gateway") })
        {
            Dictionary<object, object> svc = Find("Service", service), dep = Find("Deployment", deployment);
            Assert.Equal(Map(dep, "spec", "template", "metadata", "labels"), Map(svc, "spec", "selector"));
            Assert.Equal(Text(Port(Container(dep)), "name"), Text((Dictionary<object, object>)List(svc, "spec", "ports")[0], "targetPort"));
        }

        Assert.Equal("None", Text(Find("Service", "batching-infer-pods"), "spec", "clusterIP"));
    }

    [Fact]
    public async Task The_autoscaler_reads_a_queue_depth_the_instances_really_export()
    {
        Dictionary<object, object> hpa = Find("HorizontalPodAutoscaler", "batching-infer");
        Assert.Equal("batching-infer", Text(hpa, "spec", "scaleTargetRef", "name"));
        Assert.Equal("Deployment", Text(hpa, "spec", "scaleTargetRef", "kind"));
        var metric = (Dictionary<object, object>)List(hpa, "spec", "metrics")[0];
        Assert.Equal("Pods", Text(metric, "type"));
        string name = Text(metric, "pods", "metric", "name");

        // The adapter rule publishes that name, from a series with the processor's label.
        Dictionary<object, object> adapter = Parse(Text(Find("ConfigMap", "prometheus-adapter-batching"), "data", "config.yaml")).Single();
        var rule = (Dictionary<object, object>)List(adapter, "rules")[0];
        Assert.Equal(name, Text(rule, "name", "as"));
        string series = Text(rule, "seriesQuery");
        string source = series[..series.IndexOf('{', StringComparison.Ordinal)];
        Assert.Contains($"batching_processor=\"{LoadPoller.Processor}\"", series, StringComparison.Ordinal);

        string exposition = await cluster.Client.GetStringAsync(new Uri(cluster.Instances[0].Address, "metrics"));
        Assert.Contains(exposition.Split('\n'), line => line.StartsWith(source + "{", StringComparison.Ordinal)
            && line.Contains($"batching_processor=\"{LoadPoller.Processor}\"", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_gateway_deployment_passes_arguments_the_gateway_accepts_and_probes_what_it_serves()
    {
        Dictionary<object, object> container = Container(Find("Deployment", "batching-gateway"));
        string[] args = [.. List(container, "args").Cast<string>()];
        GatewayOptions options = GatewayOptions.Read(new ConfigurationBuilder().AddCommandLine(args).Build().GetSection("Gateway"));
        Assert.True(options.ResolveDns);

        // The instance URL is the headless Service, on its port.
        Uri instance = Assert.Single(options.Instances);
        Dictionary<object, object> headless = Find("Service", "batching-infer-pods");
        Assert.Equal(Text(headless, "metadata", "name"), instance.Host);
        Assert.Equal(Text((Dictionary<object, object>)List(headless, "spec", "ports")[0], "port"), instance.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(PortArgument(container), Text(Port(container), "containerPort"));

        SampleProcess gateway = cluster.Gateways["LoadAware"];
        foreach (string probe in new[] { "readinessProbe", "livenessProbe" })
        {
            using HttpResponseMessage response = await cluster.Client.GetAsync(new Uri(gateway.Address, Text(container, probe, "httpGet", "path").TrimStart('/')));
            Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        }
    }

    private static List<(string File, Dictionary<object, object> Doc)> Documents() =>
        [.. Directory.GetFiles(Folder, "*.yaml").Order(StringComparer.Ordinal)
            .SelectMany(path => Parse(File.ReadAllText(path)).Select(doc => (Path.GetFileName(path), doc)))];

    private static List<Dictionary<object, object>> Parse(string yaml)
    {
        IDeserializer deserializer = new DeserializerBuilder().Build();
        var parser = new Parser(new StringReader(yaml));
        parser.Consume<StreamStart>();
        var docs = new List<Dictionary<object, object>>();
        while (parser.Accept<DocumentStart>(out _))
        {
            docs.Add(deserializer.Deserialize<Dictionary<object, object>>(parser));
        }

        Assert.NotEmpty(docs);
        return docs;
    }

    private static Dictionary<object, object> Find(string kind, string name) =>
        Documents().Select(d => d.Doc).SingleOrDefault(d => Text(d, "kind") == kind && Text(d, "metadata", "name") == name)
            ?? throw new Xunit.Sdk.XunitException($"No {kind} named {name} in {Folder}.");

    private static Dictionary<object, object> Container(Dictionary<object, object> deployment) =>
        (Dictionary<object, object>)Assert.Single(List(deployment, "spec", "template", "spec", "containers"));

    private static Dictionary<object, object> Port(Dictionary<object, object> container) =>
        (Dictionary<object, object>)Assert.Single(List(container, "ports"));

    private static string PortArgument(Dictionary<object, object> container)
    {
        List<string> args = [.. List(container, "args").Cast<string>()];
        int at = args.IndexOf("--port");
        Assert.True(at >= 0 && at + 1 < args.Count, "The container passes no --port.");

        // The samples bind loopback unless told otherwise; a pod must be reachable on its own address.
        int all = args.IndexOf("--Server:AllInterfaces");
        Assert.True(all >= 0 && all + 1 < args.Count && args[all + 1] == "true", "The container does not pass --Server:AllInterfaces true.");
        return args[at + 1];
    }

    private static object? Node(Dictionary<object, object> root, params string[] path)
    {
        object? node = root;
        foreach (string key in path)
        {
            node = node is Dictionary<object, object> map && map.TryGetValue(key, out object? child) ? child : null;
        }

        return node;
    }

    private static string Text(Dictionary<object, object> root, params string[] path) => Node(root, path) as string ?? "";

    private static Dictionary<object, object> Map(Dictionary<object, object> root, params string[] path) =>
        Node(root, path) as Dictionary<object, object> ?? throw new Xunit.Sdk.XunitException($"{string.Join('.', path)} is not a mapping.");

    private static List<object> List(Dictionary<object, object> root, params string[] path) =>
        Node(root, path) as List<object> ?? throw new Xunit.Sdk.XunitException($"{string.Join('.', path)} is not a list.");
}
