using Batching.Ilgpu;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace Batching.Ilgpu.Tests;

public class RowKernelProperties
{
    public static class Arbitraries
    {
        /// <summary>A batch: widths, a seed for the data, and how many concurrent callers.</summary>
        public static Arbitrary<(int InputWidth, int OutputWidth, int Callers, int Seed)> Batch() =>
            (from inputWidth in Gen.Choose(1, 24)
             from outputWidth in Gen.Choose(1, 12)
             from callers in Gen.Choose(1, 40)
             from seed in Gen.Choose(0, 1_000_000)
             select (inputWidth, outputWidth, callers, seed)).ToArbitrary();
    }

    private static async Task<bool> MatchesReference(string path, (int InputWidth, int OutputWidth, int Callers, int Seed) batch, int maxBatchSize)
    {
        var random = new Random(batch.Seed);
        float[] weights = RowKernelTests.Weights(random, batch.InputWidth, batch.OutputWidth);
        await using var processor = GpuBatchProcessor.CreateRows<float, DenseRelu>(
            RowKernelTests.Rows(path, batch.InputWidth, batch.OutputWidth, weights), default,
            new BatchingOptions { MaxBatchSize = maxBatchSize, MaxDelay = TimeSpan.FromMilliseconds(1) });
        float[][] inputs = Enumerable.Range(0, batch.Callers).Select(_ => Data.Floats(random, batch.InputWidth)).ToArray();
        float[][] outputs = await Task.WhenAll(inputs.Select(x => processor.ProcessAsync(x).AsTask()));
        return inputs.Select((x, i) => Data.Close(outputs[i], DenseRelu.Reference(x, weights, batch.OutputWidth))).All(ok => ok);
    }

    [Property(Arbitrary = [typeof(Arbitraries)], MaxTest = 60)]
    public Task<bool> The_managed_path_returns_the_reference_outputs((int InputWidth, int OutputWidth, int Callers, int Seed) batch) =>
        MatchesReference("managed", batch, maxBatchSize: 16);

    [Property(Arbitrary = [typeof(Arbitraries)], MaxTest = 8)]
    public Task<bool> The_generated_ilgpu_kernel_returns_the_reference_outputs((int InputWidth, int OutputWidth, int Callers, int Seed) batch) =>
        MatchesReference("ilgpu-cpu", batch, maxBatchSize: 8);

    [Property(MaxTest = 100)]
    public bool Item_outputs_match_the_reference_for_any_batch(float[] inputs)
    {
        float[] finite = inputs.Where(float.IsFinite).Select(x => Math.Clamp(x, -1e6f, 1e6f)).ToArray();
        var processor = GpuBatchProcessor.Create<float, float, SquarePlus>(new SquarePlus { Offset = 1 }, ItemKernelTests.Managed,
            new BatchingOptions { MaxBatchSize = 7, MaxDelay = TimeSpan.Zero });
        try
        {
            float[] outputs = Task.WhenAll(finite.Select(x => processor.ProcessAsync(x).AsTask())).GetAwaiter().GetResult();
            return outputs.SequenceEqual(finite.Select(x => SquarePlus.Reference(x, 1)));
        }
        finally
        {
            processor.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }
}
