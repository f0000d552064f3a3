namespace Batching.Ilgpu;

/// <summary>What runs a device's batches.</summary>
public enum GpuDeviceKind
{
    /// <summary>An NVIDIA GPU through CUDA.</summary>
    Cuda = 0,

    /// <summary>The managed CPU path: the kernel struct in a parallel .NET loop.</summary>
    ManagedCpu = 1,

    /// <summary>ILGPU's CPU accelerator (a simulator, for tests and debugging).</summary>
    IlgpuCpu = 2,
}

/// <summary>A snapshot of one device (or device instance) of a GPU processor, for health checks and metrics.</summary>
public sealed class GpuDeviceStatus
{
    internal GpuDeviceStatus(string name, GpuDeviceKind kind, bool isFallback, bool isHealthy, int inFlightBatches, int maxInFlightBatches,
        long completedBatches, long failedBatches, string? faultReason, DateTimeOffset? faultedAt)
    {
        Name = name;
        Kind = kind;
        IsFallback = isFallback;
        IsHealthy = isHealthy;
        InFlightBatches = inFlightBatches;
        MaxInFlightBatches = maxInFlightBatches;
        CompletedBatches = completedBatches;
        FailedBatches = failedBatches;
        FaultReason = faultReason;
        FaultedAt = faultedAt;
    }

    /// <summary>The device's name, such as <c>"cuda:0 NVIDIA H200 #0"</c> or <c>"managed-cpu"</c>.</summary>
    public string Name { get; }

    /// <summary>What runs the device's batches.</summary>
    public GpuDeviceKind Kind { get; }

    /// <summary>Whether this is the managed CPU path that takes batches when no healthy GPU device is left.</summary>
    public bool IsFallback { get; }

    /// <summary>Whether the device takes batches. A faulted device is quarantined for the life of the process:
    /// device-side faults are not recoverable in-process.</summary>
    public bool IsHealthy { get; }

    /// <summary>Batches running on the device now.</summary>
    public int InFlightBatches { get; }

    /// <summary>The most batches the device runs at once.</summary>
    public int MaxInFlightBatches { get; }

    /// <summary>Batches the device completed.</summary>
    public long CompletedBatches { get; }

    /// <summary>Batches that failed on the device (each one re-routed when another path was left).</summary>
    public long FailedBatches { get; }

    /// <summary>Why the device was marked unhealthy, or <see langword="null"/> while healthy.</summary>
    public string? FaultReason { get; }

    /// <summary>When the device was marked unhealthy, or <see langword="null"/> while healthy.</summary>
    public DateTimeOffset? FaultedAt { get; }

    /// <inheritdoc />
    public override string ToString() =>
        $"{Name} ({Kind}{(IsFallback ? ", fallback" : "")}): {(IsHealthy ? "healthy" : "unhealthy: " + FaultReason)}, {InFlightBatches}/{MaxInFlightBatches} in flight, {CompletedBatches} done, {FailedBatches} failed";
}

/// <summary>Device health and load of a GPU processor, for a health check or metrics.</summary>
public interface IGpuDiagnostics
{
    /// <summary>A snapshot of every device, the managed CPU fallback last.</summary>
    /// <returns>One status per device instance.</returns>
    IReadOnlyList<GpuDeviceStatus> GetDevices();

    /// <summary>Whether at least one GPU device (not the fallback) is healthy.</summary>
    bool HasHealthyGpu { get; }
}

/// <summary>A batch processor that runs an ILGPU kernel, with device diagnostics.</summary>
/// <typeparam name="TIn">The type of one input item.</typeparam>
/// <typeparam name="TOut">The type of one output item.</typeparam>
public interface IGpuBatchProcessor<TIn, TOut> : IBatchProcessor<TIn, TOut>, IGpuDiagnostics
{
}
