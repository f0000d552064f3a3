using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Batching.Samples.EmbeddingService;
using Batching.Samples.EmbeddingService.Model;

namespace Batching.EmbeddingService.Tests;

/// <summary>The wire contract of <c>POST /v1/embeddings</c>: formats, usage, errors as problem details, health and metrics.</summary>
public sealed class HttpContractTests : IAsyncLifetime
{
    private RunningServer _server = null!;

    public static TheoryData<string, string, string> BadBodies => new()
    {
        { """{"input": ""}""", "Empty input", "'input' is empty" },
        { """{"input": []}""", "Empty input", "empty array" },
        { """{"input": ["fine", " "]}""", "Empty input", "'input[1]' is empty" },
        { """{"input": [1, 2, 3]}""", "Input not a string", "'input[0]' must be a string" },
        { """{"input": 42}""", "Input not a string", "it was a number" },
        { """{"model": "all-MiniLM-L6-v2"}""", "Missing input", "'input'" },
        { """{"input": "x", "model": "text-embedding-3-small"}""", "Unknown model", "'text-embedding-3-small'" },
        { """{"input": "x", "dimensions": 128}""", "Dimensions not supported", "it was 128" },
        { """{"input": "x", "encoding_format": "int8"}""", "Unknown encoding_format", "'int8'" },
        { """{"inputs": "x"}""", "Malformed JSON", "inputs" },
        { """{"input": "x" """, "Malformed JSON", "" },
        { JsonSerializer.Serialize(new { input = Enumerable.Repeat("x", EmbeddingsEndpoint.MaxInputs + 1) }), "Too many inputs",
            $"at most {EmbeddingsEndpoint.MaxInputs} strings in one request; it held {EmbeddingsEndpoint.MaxInputs + 1}" },
        { JsonSerializer.Serialize(new { input = new[] { "short", string.Join(' ', Enumerable.Repeat("word", 300)) } }), "Input too long",
            $"'input[1]' is 302 tokens long; all-MiniLM-L6-v2 reads at most {MiniLmModel.MaxTokens}" },
    };

    public async Task InitializeAsync() => _server = await RunningServer.StartAsync();

    public async Task DisposeAsync() => await _server.DisposeAsync();

    [Theory]
    [MemberData(nameof(BadBodies))]
    public async Task A_bad_body_gets_a_400_problem_naming_what_was_wrong(string body, string title, string detail)
    {
        using HttpResponseMessage response = await _server.PostAsync(body);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Problem problem = await Problem.ReadAsync(response);
        Assert.Equal(title, problem.Title);
        Assert.Contains(detail, problem.Detail, StringComparison.Ordinal);
        Assert.Empty(_server.Gate.Calls);
    }

    [Fact]
    public async Task A_body_that_is_not_json_gets_a_415()
    {
        using HttpResponseMessage response = await _server.Client.PostAsync("/v1/embeddings", new StringContent("hello", Encoding.UTF8, "text/plain"));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Contains("application/json", (await Problem.ReadAsync(response)).Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Float_and_base64_answers_carry_the_same_vectors_in_input_order_with_the_token_usage()
    {
        string[] texts = ["first input", "the second input is longer than the first", "third"];
        using JsonDocument floats = await PostOkAsync(new { input = texts, model = MiniLmModel.ModelId });
        using JsonDocument base64 = await PostOkAsync(new { input = texts, model = MiniLmModel.ModelId, encoding_format = "base64" });

        JsonElement root = floats.RootElement;
        Assert.Equal("list", root.GetProperty("object").GetString());
        Assert.Equal(MiniLmModel.ModelId, root.GetProperty("model").GetString());
        int tokens = texts.Sum(_server.Model.CountTokens);
        Assert.Equal(tokens, root.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(tokens, root.GetProperty("usage").GetProperty("total_tokens").GetInt32());

        JsonElement[] data = [.. root.GetProperty("data").EnumerateArray()];
        JsonElement[] encoded = [.. base64.RootElement.GetProperty("data").EnumerateArray()];
        Assert.Equal(texts.Length, data.Length);
        for (int i = 0; i < texts.Length; i++)
        {
            Assert.Equal(i, data[i].GetProperty("index").GetInt32());
            float[] vector = [.. data[i].GetProperty("embedding").EnumerateArray().Select(e => e.GetSingle())];
            float[] decoded = MemoryMarshal.Cast<byte, float>(encoded[i].GetProperty("embedding").GetBytesFromBase64()).ToArray();
            Assert.Equal(vector, decoded);
            float[] alone = _server.Model.Embed([texts[i]]).Vectors[0];
            Assert.True(Vectors.Cosine(alone, vector) >= 0.9999);
        }
    }

    [Fact]
    public async Task Healthz_and_metrics_report_the_processor_named_after_the_model()
    {
        using (await PostOkAsync(new { input = "warm" }))
        {
        }

        using HttpResponseMessage health = await _server.Client.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        using JsonDocument report = JsonDocument.Parse(await health.Content.ReadAsStringAsync());
        Assert.Equal("Healthy", report.RootElement.GetProperty("status").GetString());
        Assert.True(report.RootElement.GetProperty("checks").GetProperty("batching").GetProperty("data").TryGetProperty(RunningServer.ProcessorName, out _));

        string metrics = await _server.MetricsAsync();
        Assert.Contains($"batching_processor=\"{RunningServer.ProcessorName}\"", metrics, StringComparison.Ordinal);
        // The pipeline's UseOpenTelemetry() stage reports its own GenAI metrics beside the processor's.
        Assert.Contains("gen_ai_client_operation_duration", metrics, StringComparison.Ordinal);
    }

    private async Task<JsonDocument> PostOkAsync(object body)
    {
        using HttpResponseMessage response = await _server.PostAsync(JsonSerializer.Serialize(body));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync());
    }
}
