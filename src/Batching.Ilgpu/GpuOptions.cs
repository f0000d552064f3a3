namespace Batching.Ilgpu;

/// <summary>Which devices a GPU processor runs on.</summary>
public enum GpuDevicePreference
{
    /// <summary>CUDA devices when there are any, else the managed CPU path. The default.</summary>
    Auto = 0,

    /// <summary>CUDA devices only: start-up fails when none can be used. The managed CPU path still takes over
    /// when every CUDA device has faulted, unless <see cref="GpuOptions.FallbackToCpu"/> is off.</summary>
    Cuda = 1,

    /// <summary>The managed CPU path only: the kernel struct runs in a parallel loop in .NET.</summary>
    ManagedCpu = 2,

    /// <summary>ILGPU's CPU accelerator, a slow simulator of the GPU path (streams, buffers, the generated kernel):
    /// for tests and kernel debugging with small batches only, never for production.</summary>
    IlgpuCpu = 3,
}

/// <summary>Settings of a GPU batch processor (what runs the batches; how many items form a batch is set by
/// <see cref="BatchingOptions"/>). Validated when the processor is built.</summary>
public class GpuOptions
{
    /// <summary>The default of <see cref="MaxBatchesInFlightPerDevice"/>: 3 (upload, compute and download of three
    /// consecutive batches overlap; the configuration measured best for the raw pinned loop on an H200).</summary>
    public const int DefaultMaxBatchesInFlightPerDevice = 3;

    /// <summary>The default of <see cref="MaxRetries"/>: 2.</summary>
    public const int DefaultMaxRetries = 2;

    /// <summary>The default of <see cref="LaunchTimeout"/>: 10 s.</summary>
    public static readonly TimeSpan DefaultLaunchTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Which devices run the batches.</summary>
    /// <value>Default: <see cref="GpuDevicePreference.Auto"/>.</value>
    public GpuDevicePreference Device { get; set; } = GpuDevicePreference.Auto;

    /// <summary>The CUDA device ordinals to use; <see langword="null"/> or empty uses every CUDA device.</summary>
    /// <value>Default: <see langword="null"/>.</value>
    public IReadOnlyList<int>? CudaDeviceIds { get; set; }

    /// <summary>How many independent instances (each with its own ILGPU context, accelerator, streams and buffers) to
    /// run on each device. More than one can help when one instance cannot keep a large GPU busy.</summary>
    /// <value>Default: 1. Allowed: 1 to 16.</value>
    public int InstancesPerDevice { get; set; } = 1;

    /// <summary>How many batches one device instance runs at once, each on its own stream with its own staging and
    /// device buffers, so that the upload, compute and download of consecutive batches overlap.</summary>
    /// <value>Default: 3. Allowed: 1 to 16.</value>
    public int MaxBatchesInFlightPerDevice { get; set; } = DefaultMaxBatchesInFlightPerDevice;

    /// <summary>How many times a batch whose device faulted is re-routed to another healthy device before the
    /// managed CPU path takes it.</summary>
    /// <value>Default: 2. Allowed: 0 to 16.</value>
    public int MaxRetries { get; set; } = DefaultMaxRetries;

    /// <summary>How long a launch (upload, kernel, download) may take on a device before the device is treated as hung,
    /// marked unhealthy, and the batch re-routed.</summary>
    /// <value>Default: 10 s. Allowed: more than zero, or <see cref="Timeout.InfiniteTimeSpan"/>.</value>
    public TimeSpan LaunchTimeout { get; set; } = DefaultLaunchTimeout;

    /// <summary>Whether the managed CPU path runs batches when no healthy GPU device is left. When off, such batches
    /// fail with <see cref="BatchExecutionException"/>.</summary>
    /// <value>Default: <see langword="true"/>.</value>
    public bool FallbackToCpu { get; set; } = true;

    /// <summary>Whether a <see cref="float"/>, <see cref="double"/> or half-precision (<see cref="System.Half"/>, <see cref="ILGPU.Half"/>) input that is NaN or infinite
    /// is rejected (with <see cref="ArgumentException"/> for that caller only, before it is queued). Applies to row
    /// elements and to items of those types.</summary>
    /// <value>Default: <see langword="false"/>.</value>
    public bool RejectNonFiniteInputs { get; set; }

    /// <summary>Whether to compile the kernel to CUDA PTX at start-up even when no CUDA device is used, so a kernel
    /// that could never run on a GPU fails start-up on a development machine too (about half a second).</summary>
    /// <value>Default: <see langword="true"/>.</value>
    public bool ValidateKernelWithoutCuda { get; set; } = true;

    /// <summary>Checks every setting and throws for the first one out of range.</summary>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public virtual void Validate()
    {
        Require(Enum.IsDefined(Device), nameof(Device), "must be Auto, Cuda, ManagedCpu or IlgpuCpu", Device);
        Require(InstancesPerDevice is >= 1 and <= 16, nameof(InstancesPerDevice), "must be between 1 and 16", InstancesPerDevice);
        Require(MaxBatchesInFlightPerDevice is >= 1 and <= 16, nameof(MaxBatchesInFlightPerDevice), "must be between 1 and 16", MaxBatchesInFlightPerDevice);
        Require(MaxRetries is >= 0 and <= 16, nameof(MaxRetries), "must be between 0 and 16", MaxRetries);
        Require(LaunchTimeout > TimeSpan.Zero || LaunchTimeout == Timeout.InfiniteTimeSpan, nameof(LaunchTimeout), "must be more than zero, or Timeout.InfiniteTimeSpan", LaunchTimeout);
        if (CudaDeviceIds is not null)
        {
            foreach (int id in CudaDeviceIds)
            {
                Require(id >= 0, nameof(CudaDeviceIds), "must hold device ordinals of 0 or more", id);
            }
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming <paramref name="setting"/> unless <paramref name="condition"/> holds.</summary>
    /// <param name="condition">The rule.</param>
    /// <param name="setting">The property name.</param>
    /// <param name="rule">The rule in words.</param>
    /// <param name="value">The value found.</param>
    /// <exception cref="ArgumentException"><paramref name="condition"/> is false.</exception>
    protected void Require(bool condition, string setting, string rule, object? value)
    {
        if (!condition)
        {
            throw new ArgumentException($"{GetType().Name.Split('`')[0]}.{setting} {rule}; it was {value ?? "null"}.", setting);
        }
    }
}

/// <summary>Settings of a row-kernel GPU processor: the row widths and the device-resident parameters.</summary>
/// <typeparam name="T">The element type of rows and parameters.</typeparam>
public sealed class GpuRowOptions<T> : GpuOptions
    where T : unmanaged
{
    /// <summary>The largest value <see cref="InputWidth"/> and <see cref="OutputWidth"/> accept: 1,048,576.</summary>
    public const int MaxWidth = 1 << 20;

    /// <summary>The number of values in every input row; a call with another length is rejected.</summary>
    /// <value>Default: 0 (must be set). Allowed: 1 to <see cref="MaxWidth"/>.</value>
    public int InputWidth { get; set; }

    /// <summary>The number of values in every output row.</summary>
    /// <value>Default: 0 (must be set). Allowed: 1 to <see cref="MaxWidth"/>.</value>
    public int OutputWidth { get; set; }

    /// <summary>Parameters (model weights, a lookup table) uploaded once to every device at start-up and passed to every
    /// launch through <see cref="IRowBatch{T}.Parameter"/>. Copied at start-up, so later changes have no effect.</summary>
    /// <value>Default: empty.</value>
    public ReadOnlyMemory<T> Parameters { get; set; }

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        Require(InputWidth is >= 1 and <= MaxWidth, nameof(InputWidth), $"must be between 1 and {MaxWidth}", InputWidth);
        Require(OutputWidth is >= 1 and <= MaxWidth, nameof(OutputWidth), $"must be between 1 and {MaxWidth}", OutputWidth);
    }
}
