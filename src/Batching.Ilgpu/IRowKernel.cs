namespace Batching.Ilgpu;

/// <summary>
/// A row kernel: items are rows of <see cref="IRowBatch{T}.InputWidth"/> values and results are rows of
/// <see cref="IRowBatch{T}.OutputWidth"/> values (an embedding, a feature row). The kernel computes one output element
/// and sees the whole batch and the device-resident parameters, so it can do per-row math such as dot products or a
/// dense layer. Implement it on a <see langword="struct"/>.
/// </summary>
/// <typeparam name="T">The element type of input rows, output rows and parameters; an unmanaged type such as <see cref="float"/>.</typeparam>
/// <remarks>
/// <para>The library launches one GPU thread per output element, a flat index over <c>batch.Count × OutputWidth</c>
/// split into <c>(row, column)</c>, and writes the returned value itself, so a kernel cannot write out of bounds.
/// Consecutive threads have consecutive columns: a parameter layout indexed <c>k * OutputWidth + column</c>
/// (input-major) gives coalesced reads.</para>
/// <para><see cref="Apply{TBatch}"/> is generic over the batch view so that the same code is compiled by ILGPU for the
/// device and by the .NET JIT for the managed CPU path; read the batch only through the <c>TBatch</c> argument.
/// It follows ILGPU's kernel rules: value types only, no classes, strings, exceptions, recursion or boxing.
/// Reads outside the batch are not checked on the device: keep indices within the widths.</para>
/// </remarks>
public interface IRowKernel<T>
    where T : unmanaged
{
    /// <summary>Computes the output element at <paramref name="column"/> of row <paramref name="row"/>.</summary>
    /// <typeparam name="TBatch">The batch view; supplied by the library.</typeparam>
    /// <param name="row">The row, from 0 to <c>batch.Count - 1</c>.</param>
    /// <param name="column">The output column, from 0 to <c>batch.OutputWidth - 1</c>.</param>
    /// <param name="batch">The whole batch: input rows and parameters.</param>
    /// <returns>The output element.</returns>
    T Apply<TBatch>(int row, int column, TBatch batch)
        where TBatch : struct, IRowBatch<T>;
}

/// <summary>A read-only view of one batch of rows, laid out as a 2D array <c>[Count, InputWidth]</c>, and of the
/// device-resident parameters.</summary>
/// <typeparam name="T">The element type.</typeparam>
public interface IRowBatch<T>
    where T : unmanaged
{
    /// <summary>The number of rows in this batch.</summary>
    int Count { get; }

    /// <summary>The number of values in one input row.</summary>
    int InputWidth { get; }

    /// <summary>The number of values in one output row.</summary>
    int OutputWidth { get; }

    /// <summary>The number of parameter values.</summary>
    int ParameterCount { get; }

    /// <summary>Reads input element <c>[row, column]</c>.</summary>
    /// <param name="row">The row, from 0 to <see cref="Count"/> - 1.</param>
    /// <param name="column">The column, from 0 to <see cref="InputWidth"/> - 1.</param>
    /// <returns>The element.</returns>
    T Input(int row, int column);

    /// <summary>Reads parameter <paramref name="index"/>.</summary>
    /// <param name="index">The index, from 0 to <see cref="ParameterCount"/> - 1.</param>
    /// <returns>The parameter.</returns>
    T Parameter(int index);
}

/// <summary>
/// An optional managed CPU form of an <see cref="IRowKernel{T}"/>, used row by row instead of calling
/// <see cref="IRowKernel{T}.Apply{TBatch}"/> element by element when no GPU runs the batch; write it with SIMD
/// (<see cref="System.Numerics.Vector{T}"/>) where that helps. It must compute the same results as <c>Apply</c>.
/// </summary>
/// <typeparam name="T">The element type.</typeparam>
public interface ICpuRowKernel<T> : IRowKernel<T>
    where T : unmanaged
{
    /// <summary>Computes one output row.</summary>
    /// <param name="input">The input row, <c>InputWidth</c> values.</param>
    /// <param name="output">The output row to fill, <c>OutputWidth</c> values.</param>
    /// <param name="parameters">The parameters.</param>
    void ApplyRow(ReadOnlySpan<T> input, Span<T> output, ReadOnlySpan<T> parameters);
}
