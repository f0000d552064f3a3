using System.Numerics;
using Batching.Ilgpu;

namespace GpuInference;

/// <summary>
/// One dense layer with ReLU: <c>out[j] = max(0, bias[j] + Σk in[k] · w[k, j])</c>. The parameters hold the weights
/// input-major (<c>w[k * OutputWidth + j]</c>, so neighbouring GPU threads read neighbouring weights), then the biases.
/// </summary>
public readonly struct DenseRelu : ICpuRowKernel<float>
{
    /// <summary>GPU (and generic) form: one output element per thread.</summary>
    public float Apply<TBatch>(int row, int column, TBatch batch)
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

    /// <summary>Managed CPU form: a whole row, SIMD across output columns.</summary>
    public void ApplyRow(ReadOnlySpan<float> input, Span<float> output, ReadOnlySpan<float> parameters)
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
            output[j] = MathF.Max(output[j], 0);
        }
    }
}
