using System.Numerics;
using Batching.Ilgpu;

namespace Batching.Ilgpu.Tests;

public struct SquarePlus : IItemKernel<float, float>
{
    public float Offset;

    public readonly float Apply(float input) => (input * input) + Offset;

    public static float Reference(float input, float offset) => (input * input) + offset;
}

public struct Pair
{
    public int A;
    public int B;
}

public struct PairSum : IItemKernel<Pair, long>
{
    public readonly long Apply(Pair input) => (long)input.A + input.B;
}

/// <summary>Doubles every item; has a SIMD CPU form that must agree.</summary>
public struct Twice : ICpuItemKernel<float, float>
{
    public readonly float Apply(float input) => input * 2;

    public readonly void ApplyAll(ReadOnlySpan<float> inputs, Span<float> outputs)
    {
        for (int i = 0; i < inputs.Length; i++)
        {
            outputs[i] = inputs[i] * 2;
        }
    }
}

/// <summary>output[j] = relu(sum_k in[k] * w[k * OutputWidth + j] + bias[j]); parameters hold w then bias.</summary>
public struct DenseRelu : IRowKernel<float>
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

    public static float[] Reference(ReadOnlySpan<float> input, ReadOnlySpan<float> parameters, int outputWidth)
    {
        var output = new float[outputWidth];
        for (int j = 0; j < outputWidth; j++)
        {
            double sum = parameters[(input.Length * outputWidth) + j];
            for (int k = 0; k < input.Length; k++)
            {
                sum += input[k] * parameters[(k * outputWidth) + j];
            }

            output[j] = (float)Math.Max(sum, 0);
        }

        return output;
    }
}

/// <summary>The same dense layer with a SIMD managed form.</summary>
public struct DenseReluSimd : ICpuRowKernel<float>
{
    public readonly float Apply<TBatch>(int row, int column, TBatch batch)
        where TBatch : struct, IRowBatch<float> => default(DenseRelu).Apply(row, column, batch);

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

/// <summary>Not a valid GPU kernel: throws.</summary>
public struct Throwing : IItemKernel<int, int>
{
    public readonly int Apply(int input) => input < 0 ? throw new InvalidOperationException("negative") : input;
}

internal static class Data
{
    public static float[] Floats(Random random, int count) =>
        Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();

    public static bool Close(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, float tolerance = 1e-4f)
    {
        if (actual.Length != expected.Length)
        {
            return false;
        }

        for (int i = 0; i < actual.Length; i++)
        {
            if (Math.Abs(actual[i] - expected[i]) > tolerance * Math.Max(1, Math.Abs(expected[i])))
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>Doubles every value of a row (InputWidth = OutputWidth), as the fake device backends do.</summary>
public struct DoubleRow : ICpuRowKernel<float>
{
    public readonly float Apply<TBatch>(int row, int column, TBatch batch)
        where TBatch : struct, IRowBatch<float> => batch.Input(row, column) * 2;

    public readonly void ApplyRow(ReadOnlySpan<float> input, Span<float> output, ReadOnlySpan<float> parameters)
    {
        for (int i = 0; i < input.Length; i++)
        {
            output[i] = input[i] * 2;
        }
    }
}
