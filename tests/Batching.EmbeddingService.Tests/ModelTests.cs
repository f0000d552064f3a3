using Batching.Samples.EmbeddingService.Model;

namespace Batching.EmbeddingService.Tests;

/// <summary>The model wrapper alone: length-sorted runs, limits and options.</summary>
public sealed class ModelTests
{
    private static readonly string[] Mixed =
    [
        "A long sentence about batching, padding and the cost of running many short inputs padded to the length of one long input.",
        "Short.",
        "A sentence of middling length about embeddings.",
        "Tiny one.",
        "Another fairly long sentence, so that two groups of similar lengths form and the runs are cut between them.",
    ];

    [Fact]
    public void Sorted_runs_return_each_vector_in_input_order_equal_to_the_text_embedded_alone()
    {
        using var model = new MiniLmModel(new ModelOptions { Device = ExecutionDevice.Cpu, IntraOpThreads = 1, MaxPadding = 0.15 });
        long runsBefore = model.Counters.Runs;
        (float[][] vectors, int tokens) = model.Embed(Mixed);
        long runs = model.Counters.Runs - runsBefore;

        Assert.Equal(Mixed.Sum(model.CountTokens), tokens);
        // Lengths this different cannot share a run within 15% padding, and equal-length groups can.
        Assert.InRange(runs, 2, Mixed.Length - 1);
        for (int i = 0; i < Mixed.Length; i++)
        {
            float[] alone = model.Embed([Mixed[i]]).Vectors[0];
            Assert.True(Vectors.Cosine(alone, vectors[i]) >= 0.9999, $"Input {i}.");
        }
    }

    [Fact]
    public void MaxPadding_1_runs_the_whole_call_as_one_run()
    {
        using var model = new MiniLmModel(new ModelOptions { Device = ExecutionDevice.Cpu, IntraOpThreads = 1, MaxPadding = 1 });
        long before = model.Counters.Runs;
        model.Embed(Mixed);
        Assert.Equal(1, model.Counters.Runs - before);
    }

    [Fact]
    public void Invalid_options_and_inputs_fail_naming_what_was_wrong()
    {
        Assert.Equal("Model:MaxPadding", Assert.Throws<ArgumentOutOfRangeException>(() => new MiniLmModel(new ModelOptions { MaxPadding = 1.5 })).ParamName);
        Assert.Equal("Model:IntraOpThreads", Assert.Throws<ArgumentOutOfRangeException>(() => new MiniLmModel(new ModelOptions { IntraOpThreads = -1 })).ParamName);
        using var model = new MiniLmModel(new ModelOptions { Device = ExecutionDevice.Cpu, IntraOpThreads = 1 });
        ArgumentException tooLong = Assert.Throws<ArgumentException>(() => model.Embed(["fine", string.Join(' ', Enumerable.Repeat("word", 300))]));
        Assert.Contains("Input 1 is 302 tokens long", tooLong.Message, StringComparison.Ordinal);
    }
}
