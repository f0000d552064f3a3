using Batching.Ilgpu;

namespace Batching.Benchmarks.Gpu;

/// <summary>256→256 dense ReLU per item; weights input-major then biases, as in samples/GpuInference.</summary>
public readonly struct DenseRelu : IRowKernel<float>
{
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
}
