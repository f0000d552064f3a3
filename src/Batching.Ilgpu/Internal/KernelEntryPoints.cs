using ILGPU;

namespace Batching.Ilgpu.Internal;

/// <summary>The batched kernels ILGPU compiles, generic over the user's kernel struct.</summary>
internal static class KernelEntryPoints
{
    // Auto-grouped kernels only run indices inside the launch extent, and the extent never exceeds the batch,
    // so every index below is within the buffers (sized for MaxBatchSize).
    public static void Items<TIn, TOut, TKernel>(Index1D index, ArrayView<TIn> inputs, ArrayView<TOut> outputs, TKernel kernel)
        where TIn : unmanaged
        where TOut : unmanaged
        where TKernel : struct, IItemKernel<TIn, TOut> =>
        outputs[index] = kernel.Apply(inputs[index]);

    // One flat index per output element (row-major), so that neighbouring threads write neighbouring elements
    // (coalesced) and share an input row. A 2D launch put rows on grid Y, which CUDA limits to 65,535, and left most
    // threads of an occupancy-sized group idle for narrow outputs; a 1D grid has neither problem. The builder keeps
    // MaxBatchSize × OutputWidth within int range.
    public static void Rows<T, TKernel>(Index1D index, DeviceRowBatch<T> batch, ArrayView<T> outputs, TKernel kernel)
        where T : unmanaged
        where TKernel : struct, IRowKernel<T>
    {
        int row = index.X / batch.OutputWidth;
        int column = index.X - (row * batch.OutputWidth);
        outputs[index] = kernel.Apply(row, column, batch);
    }
}

/// <summary>The batch view a row kernel sees on a device: flat row-major views of the staged inputs and the parameters.</summary>
internal readonly struct DeviceRowBatch<T> : IRowBatch<T>
    where T : unmanaged
{
    private readonly ArrayView<T> _inputs;
    private readonly ArrayView<T> _parameters;
    private readonly int _count;
    private readonly int _inputWidth;
    private readonly int _outputWidth;

    internal DeviceRowBatch(ArrayView<T> inputs, ArrayView<T> parameters, int count, int inputWidth, int outputWidth)
    {
        _inputs = inputs;
        _parameters = parameters;
        _count = count;
        _inputWidth = inputWidth;
        _outputWidth = outputWidth;
    }

    /// <inheritdoc />
    public int Count => _count;

    /// <inheritdoc />
    public int InputWidth => _inputWidth;

    /// <inheritdoc />
    public int OutputWidth => _outputWidth;

    /// <inheritdoc />
    public int ParameterCount => _parameters.IntLength;

    /// <inheritdoc />
    public T Input(int row, int column) => _inputs[(row * _inputWidth) + column];

    /// <inheritdoc />
    public T Parameter(int index) => _parameters[index];
}

/// <summary>The batch view a row kernel sees on the managed CPU path: pointers into pinned memory, bounds-checked
/// so that a kernel bug surfaces as an exception rather than a stray read.</summary>
internal readonly unsafe struct HostRowBatch<T> : IRowBatch<T>
    where T : unmanaged
{
    private readonly T* _inputs;
    private readonly T* _parameters;
    private readonly int _count;
    private readonly int _inputWidth;
    private readonly int _outputWidth;
    private readonly int _parameterCount;

    internal HostRowBatch(T* inputs, int count, int inputWidth, int outputWidth, T* parameters, int parameterCount)
    {
        _inputs = inputs;
        _count = count;
        _inputWidth = inputWidth;
        _outputWidth = outputWidth;
        _parameters = parameters;
        _parameterCount = parameterCount;
    }

    /// <inheritdoc />
    public int Count => _count;

    /// <inheritdoc />
    public int InputWidth => _inputWidth;

    /// <inheritdoc />
    public int OutputWidth => _outputWidth;

    /// <inheritdoc />
    public int ParameterCount => _parameterCount;

    /// <inheritdoc />
    public T Input(int row, int column)
    {
        if ((uint)row >= (uint)_count || (uint)column >= (uint)_inputWidth)
        {
            ThrowOutOfRange(nameof(Input));
        }

        return _inputs[((long)row * _inputWidth) + column];
    }

    /// <inheritdoc />
    public T Parameter(int index)
    {
        if ((uint)index >= (uint)_parameterCount)
        {
            ThrowOutOfRange(nameof(Parameter));
        }

        return _parameters[index];
    }

    private static void ThrowOutOfRange(string what) =>
        throw new IndexOutOfRangeException($"The row kernel read {what} outside the batch.");
}
