using Microsoft.Extensions.Logging;

namespace Batching.Ilgpu.Internal;

internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "GPU processor '{Processor}' runs kernel {Kernel} on {Device} ({Kind}): {Reason}")]
    public static partial void DeviceSelected(ILogger logger, string processor, string kernel, string device, GpuDeviceKind kind, string reason);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "GPU processor '{Processor}' uses the managed CPU path for kernel {Kernel}: {Reason}")]
    public static partial void CpuFallbackChosen(ILogger logger, string processor, string kernel, string reason);

    [LoggerMessage(EventId = 3, Level = LogLevel.Information, Message = "libcuda.so was not found; loaded the CUDA driver from {Path} instead")]
    public static partial void CudaDriverResolved(ILogger logger, string path);

    [LoggerMessage(EventId = 4, Level = LogLevel.Error, Message = "Device {Device} of GPU processor '{Processor}' faulted and is quarantined for the life of the process: {Reason}")]
    public static partial void DeviceFaulted(ILogger logger, Exception exception, string processor, string device, string reason);

    [LoggerMessage(EventId = 5, Level = LogLevel.Warning, Message = "A batch of {Count} item(s) of GPU processor '{Processor}' failed on {Device}; re-routing (attempt {Attempt})")]
    public static partial void BatchRerouted(ILogger logger, string processor, int count, string device, int attempt);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "GPU processor '{Processor}' has no healthy GPU left; batches run on the managed CPU path")]
    public static partial void FallingBackToCpu(ILogger logger, string processor);

    [LoggerMessage(EventId = 7, Level = LogLevel.Warning, Message = "Releasing device {Device} of GPU processor '{Processor}' failed; its resources are abandoned")]
    public static partial void ReleaseFailed(ILogger logger, Exception exception, string processor, string device);

    [LoggerMessage(EventId = 8, Level = LogLevel.Warning, Message = "CUDA device {Device} could not be started for GPU processor '{Processor}' and is skipped")]
    public static partial void DeviceStartFailed(ILogger logger, Exception exception, string processor, string device);

    [LoggerMessage(EventId = 9, Level = LogLevel.Debug, Message = "Kernel {Kernel} compiled to PTX for {Architecture} in {Milliseconds} ms")]
    public static partial void KernelValidated(ILogger logger, string kernel, string architecture, long milliseconds);

    [LoggerMessage(EventId = 10, Level = LogLevel.Warning, Message = "A batch of {Count} item(s) of GPU processor '{Processor}' cannot be launched on {Device} and runs on the next path; the device stays in rotation")]
    public static partial void LaunchRejected(ILogger logger, Exception exception, string processor, int count, string device);
}
