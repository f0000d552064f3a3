using System.Numerics;
using Batching.Ilgpu;

namespace Batching.Samples.WebApi;

/// <summary>
/// The model: one dense layer with ReLU, <c>out[j] = max(0, bias[j] + sum_k in[k] * w[k, j])</c>.
/// Parameters hold the weights input-major (<c>w[k * OutputWidth + j]</c>, so neighbouring GPU threads read
/// neighbouring weights) followed by the bias; they are uploaded to the device once at start-up.
/// </summary>
public struct DenseReluKernel : ICpuRowKernel<float>
{
    public readonly float Apply<TBatch>(int row, int column, TBatch batch)
        where TBatch : struct, IRowBatch<float>
    {
        int inputWidth = batch.InputWidth;
        int outputWidth = batch.OutputWidth;
        float sum = batch.Parameter((inputWidth * outputWidth) + column);
        for (int k = 0; k < inputWidth; k++)
        {
            sum += batch.Input(row, k) * batch.Parameter((k * outputWidth) + column);
        }

        return sum > 0 ? sum : 0;
    }

    public readonly void ApplyRow(ReadOnlySpan<float> input, Span<float> output, ReadOnlySpan<float> parameters)
    {
        int outputWidth = output.Length;
        parameters.Slice(input.Length * outputWidth, outputWidth).CopyTo(output);
        for (int k = 0; k < input.Length; k++)
        {
            var x = new Vector<float>(input[k]);
            ReadOnlySpan<float> weights = parameters.Slice(k * outputWidth, outputWidth);
            int j = 0;
            for (; j <= outputWidth - Vector<float>.Count; j += Vector<float>.Count)
            {
                (new Vector<float>(output[j..]) + (x * new Vector<float>(weights[j..]))).CopyTo(output[j..]);
            }

            for (; j < outputWidth; j++)
            {
                output[j] += input[k] * weights[j];
            }
        }

        for (int j = 0; j < outputWidth; j++)
        {
            output[j] = Math.Max(output[j], 0);
        }
    }
}

/// <summary>The model's shape and its deterministic weights (a real service would load them from a file).</summary>
public sealed class ModelOptions
{
    public int InputWidth { get; set; } = 256;

    public int OutputWidth { get; set; } = 64;

    public int Seed { get; set; } = 42;

    /// <summary>Weights then bias, as <see cref="DenseReluKernel"/> reads them; scaled so outputs stay near 1.</summary>
    public float[] CreateParameters()
    {
        var random = new Random(Seed);
        var parameters = new float[(InputWidth * OutputWidth) + OutputWidth];
        float scale = 1f / MathF.Sqrt(InputWidth);
        for (int i = 0; i < parameters.Length; i++)
        {
            parameters[i] = (float)((random.NextDouble() * 2) - 1) * scale;
        }

        return parameters;
    }
}
