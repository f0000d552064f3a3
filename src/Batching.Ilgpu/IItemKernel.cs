namespace Batching.Ilgpu;

/// <summary>
/// A per-item kernel: computes one output from one input. Implement it on a <see langword="struct"/>; the library
/// generates the batched ILGPU kernel over that struct, compiles it once at start-up, and launches it over each batch.
/// </summary>
/// <typeparam name="TIn">The input item; an unmanaged type.</typeparam>
/// <typeparam name="TOut">The output item; an unmanaged type.</typeparam>
/// <remarks>
/// <see cref="Apply"/> runs on the GPU, so it follows ILGPU's kernel rules: value types only, no classes, strings,
/// exceptions, recursion or boxing. The struct's fields are copied to the device with every launch, so they suit small
/// constants; use a row kernel (<see cref="IRowKernel{T}"/>) for large device-resident parameters.
/// On the managed CPU path the same <see cref="Apply"/> runs in a parallel loop, unless the struct also implements
/// <see cref="ICpuItemKernel{TIn, TOut}"/>.
/// </remarks>
public interface IItemKernel<TIn, TOut>
    where TIn : unmanaged
    where TOut : unmanaged
{
    /// <summary>Computes the output for <paramref name="input"/>.</summary>
    /// <param name="input">One input item.</param>
    /// <returns>Its output.</returns>
    TOut Apply(TIn input);
}

/// <summary>
/// An optional managed CPU form of an <see cref="IItemKernel{TIn, TOut}"/>, used instead of calling
/// <see cref="IItemKernel{TIn, TOut}.Apply"/> item by item when no GPU runs the batch; write it with SIMD
/// (<see cref="System.Numerics.Vector{T}"/>) where that helps. It must compute the same results as <c>Apply</c>.
/// </summary>
/// <typeparam name="TIn">The input item.</typeparam>
/// <typeparam name="TOut">The output item.</typeparam>
public interface ICpuItemKernel<TIn, TOut> : IItemKernel<TIn, TOut>
    where TIn : unmanaged
    where TOut : unmanaged
{
    /// <summary>Computes <paramref name="outputs"/>[i] for every <paramref name="inputs"/>[i] of a slice of the batch.</summary>
    /// <param name="inputs">A slice of the batch's inputs.</param>
    /// <param name="outputs">The matching outputs, exactly as long as <paramref name="inputs"/>.</param>
    void ApplyAll(ReadOnlySpan<TIn> inputs, Span<TOut> outputs);
}
