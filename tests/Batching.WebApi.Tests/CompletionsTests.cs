using System.Net;
using System.Text.Json;
using Batching.Samples.WebApi.Completions;
using Microsoft.Extensions.DependencyInjection;

namespace Batching.WebApi.Tests;

/// <summary>POST /v1/completions: continuous batching behind an OpenAI-shaped endpoint, on a real server.</summary>
public class CompletionsTests
{
    private static async Task<JsonElement> CompleteAsync(RunningServer server, object body)
    {
        using HttpResponseMessage response = await server.PostAsync(body, "/v1/completions");
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    [Fact]
    public async Task A_completion_returns_the_models_text_in_the_OpenAI_shape_and_a_seed_reproduces_it()
    {
        await using var server = await RunningServer.StartAsync();
        JsonElement first = await CompleteAsync(server, new { prompt = "The processor ", max_tokens = 40, seed = 42 });
        JsonElement again = await CompleteAsync(server, new { prompt = "The processor ", max_tokens = 40, seed = 42 });
        Assert.Equal("text_completion", first.GetProperty("object").GetString());
        JsonElement choice = first.GetProperty("choices")[0];
        string text = choice.GetProperty("text").GetString()!;
        Assert.InRange(text.Length, 1, 40);
        Assert.Equal(text.Length == 40 ? "length" : "stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(text.Length, first.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(text, again.GetProperty("choices")[0].GetProperty("text").GetString());
    }

    [Fact]
    public async Task Concurrent_streams_each_get_their_own_server_sent_events_ending_with_DONE()
    {
        await using var server = await RunningServer.StartAsync();
        async Task<(string Text, string? Finish)> StreamAsync(int seed)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = RunningServer.Json(JsonSerializer.Serialize(new { prompt = "Batching ", max_tokens = 30, stream = true, seed })),
            };
            using HttpResponseMessage response = await server.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var text = new System.Text.StringBuilder();
            string? finish = null;
            bool done = false;
            while (await reader.ReadLineAsync() is { } line)
            {
                if (line.Length == 0)
                {
                    continue;
                }

                Assert.StartsWith("data: ", line, StringComparison.Ordinal);
                string data = line["data: ".Length..];
                if (data == "[DONE]")
                {
                    done = true;
                    break;
                }

                JsonElement choice = JsonDocument.Parse(data).RootElement.GetProperty("choices")[0];
                text.Append(choice.GetProperty("text").GetString());
                if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String)
                {
                    finish = choice.GetProperty("finish_reason").GetString();
                }
            }

            Assert.True(done, "the stream ended without data: [DONE]");
            return (text.ToString(), finish);
        }

        var streams = await Task.WhenAll(Enumerable.Range(0, 8).Select(StreamAsync)).WaitAsync(RunningServer.Patience);
        for (int seed = 0; seed < streams.Length; seed++)
        {
            JsonElement whole = await CompleteAsync(server, new { prompt = "Batching ", max_tokens = 30, seed });
            Assert.Equal(whole.GetProperty("choices")[0].GetProperty("text").GetString(), streams[seed].Text);
            Assert.NotNull(streams[seed].Finish);
        }
    }

    [Fact]
    public async Task A_client_that_disconnects_mid_stream_stops_consuming_device_steps()
    {
        await using var server = await RunningServer.StartAsync(null, "--Generation:StepDelayMs", "10");
        var model = server.Services.GetRequiredService<CharModel>();
        var processor = server.Services.GetRequiredService<IGenerationProcessor<CompletionPrompt, char>>();
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = RunningServer.Json(JsonSerializer.Serialize(new { prompt = "Long ", max_tokens = 1000, stream = true, seed = 1 })),
        })
        {
            using HttpResponseMessage response = await server.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            for (int events = 0; events < 5;)
            {
                string? line = await reader.ReadLineAsync().WaitAsync(RunningServer.Patience);
                events += line?.StartsWith("data: ", StringComparison.Ordinal) == true ? 1 : 0;
            }
        } // disposing the response closes the connection: the client is gone

        using var timeout = new CancellationTokenSource(RunningServer.Patience);
        while (processor.GetLoad().ActiveSequences > 0)
        {
            await Task.Delay(5, timeout.Token);
        }

        long spent = model.SequenceSteps;
        await Task.Delay(100); // ten steps' time: none of them may carry the abandoned sequence
        Assert.Equal(spent, model.SequenceSteps);
        Assert.True(spent < 1000, $"the sequence ran {spent} steps of its 1000: it was not stopped");
    }

    [Theory]
    [InlineData("""{"prompt": ["a", "b"]}""", "Invalid prompt")]
    [InlineData("""{"prompt": "a", "max_tokens": 0}""", "Invalid max_tokens")]
    [InlineData("""{"prompt": "a", "max_tokens": 5000}""", "Invalid max_tokens")]
    [InlineData("""{"prompt": """, "Malformed JSON")]
    public async Task Bad_requests_get_a_400_problem_naming_what_was_wrong(string body, string title)
    {
        await using var server = await RunningServer.StartAsync();
        using HttpResponseMessage response = await server.Client.PostAsync("/v1/completions", RunningServer.Json(body));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(title, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("title").GetString());
    }
}
