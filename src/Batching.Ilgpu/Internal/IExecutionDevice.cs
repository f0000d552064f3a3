namespace Batching.Ilgpu.Internal;

/// <summary>One place a batch can run: a GPU (or one instance on it), ILGPU's CPU accelerator, or the managed CPU path.
/// Tests substitute fakes that fail on cue.</summary>
internal interface IExecutionDevice<TIn, TOut>
{
    string Name { get; }

    GpuDeviceKind Kind { get; }

    /// <summary>The most batches <see cref="RunAsync"/> may be running at once; the router never exceeds it.</summary>
    int MaxInFlight { get; }

    /// <summary>Runs one batch. Throws when the device faulted (the router then quarantines it).</summary>
    ValueTask RunAsync(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken);

    /// <summary>Frees the device's resources. <paramref name="faulted"/>: the device is in an unknown state, so its
    /// objects must not be finalized later (a finalizer that throws ends the process). May throw; callers guard it.</summary>
    void Release(bool faulted);
}

/// <summary>Runs the kernel struct in a parallel .NET loop: the production CPU path.</summary>
internal sealed class ManagedCpuDevice<TIn, TOut, TDevIn, TDevOut>(KernelProgram<TIn, TOut, TDevIn, TDevOut> program, int maxInFlight)
    : IExecutionDevice<TIn, TOut>
    where TDevIn : unmanaged
    where TDevOut : unmanaged
{
    public string Name => "managed-cpu";

    public GpuDeviceKind Kind => GpuDeviceKind.ManagedCpu;

    public int MaxInFlight { get; } = maxInFlight;

    public ValueTask RunAsync(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        program.RunManaged(inputs, outputs, cancellationToken);
        return default;
    }

    public void Release(bool faulted)
    {
    }
}
