using Batching.Samples.WebApi;
using Microsoft.Extensions.Configuration;

namespace Batching.WebApi.Tests;

public sealed class AddressTests
{
    [Theory]
    [InlineData(null, null, "http://127.0.0.1:5080")]
    [InlineData("5081", null, "http://127.0.0.1:5081")]
    [InlineData("0", "http://127.0.0.1:9", "http://127.0.0.1:0")]
    [InlineData(null, "http://127.0.0.1:6000", "http://127.0.0.1:6000")]
    [InlineData(null, "http://localhost:6001/", "http://127.0.0.1:6001")]
    public void The_service_listens_on_127_0_0_1_only(string? port, string? urls, string expected) =>
        Assert.Equal(expected, InferenceApp.LoopbackUrl(Config(port, urls)));

    [Theory]
    [InlineData(null, "http://0.0.0.0:80")]
    [InlineData(null, "http://*:80")]
    [InlineData(null, "http://+:80")]
    [InlineData(null, "http://192.168.1.10:80")]
    [InlineData(null, "https://127.0.0.1:443")]
    [InlineData(null, "http://127.0.0.1:1;http://127.0.0.1:2")]
    [InlineData("-1", null)]
    [InlineData("70000", null)]
    [InlineData("abc", null)]
    public void Any_other_address_is_refused_with_a_message(string? port, string? urls)
    {
        ArgumentException error = Assert.Throws<ArgumentException>(() => InferenceApp.LoopbackUrl(Config(port, urls)));
        Assert.Contains(port is null ? "http://127.0.0.1:PORT" : "--port", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_interface_only_when_asked_for()
    {
        Assert.Equal("http://127.0.0.1:8080", InferenceApp.ListenUrl(Config("8080", null)));
        IConfiguration all = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["port"] = "8080", ["Server:AllInterfaces"] = "true" }).Build();
        Assert.Equal("http://0.0.0.0:8080", InferenceApp.ListenUrl(all));
    }

    private static IConfiguration Config(string? port, string? urls) =>
        new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["port"] = port, ["urls"] = urls }).Build();
}
