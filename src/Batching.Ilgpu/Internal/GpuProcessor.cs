using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Batching.Ilgpu.Internal;

/// <summary>The processor callers see: rejects bad input before it is queued (so it fails only its own caller),
/// then hands the item to the core engine, whose batch handler is the device router.</summary>
internal sealed class GpuProcessor<TIn, TOut>(IBatchProcessor<TIn, TOut> engine, DeviceRouter<TIn, TOut> router, Func<TIn, string?> check)
    : IGpuBatchProcessor<TIn, TOut>
{
    public bool HasHealthyGpu => router.HasHealthyGpu;

    public IReadOnlyList<GpuDeviceStatus> GetDevices() => router.GetDevices();

    public ValueTask<TOut> ProcessAsync(TIn input, CancellationToken cancellationToken = default)
    {
        string? problem = check(input);
        return problem is null
            ? engine.ProcessAsync(input, cancellationToken)
            : ValueTask.FromException<TOut>(new ArgumentException(problem, nameof(input)));
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await engine.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            router.Dispose();
        }
    }
}

/// <summary>Builds processors: validates settings, starts the devices, and wires the router into the core engine.</summary>
internal static class GpuProcessorBuilder
{
    public static IGpuBatchProcessor<TIn, TOut> Build<TIn, TOut, TDevIn, TDevOut>(
        KernelProgram<TIn, TOut, TDevIn, TDevOut> program,
        GpuOptions gpuOptions,
        BatchingOptions? options,
        ILoggerFactory? loggerFactory,
        TimeProvider? fallbackTime,
        Func<int, ILogger, (IReadOnlyList<IExecutionDevice<TIn, TOut>> Gpus, IExecutionDevice<TIn, TOut>? Fallback)>? devices = null)
        where TDevIn : unmanaged
        where TDevOut : unmanaged
    {
        gpuOptions.Validate();
        BatchingOptions settings = Copy(options ?? new BatchingOptions());
        settings.TimeProvider ??= fallbackTime;
        bool raiseConcurrency = settings.MaxConcurrentBatches == 1;
        settings.Validate();
        long widest = (long)settings.MaxBatchSize * Math.Max(program.InputWidth, program.OutputWidth);
        if (widest > int.MaxValue)
        {
            throw new ArgumentException(
                $"BatchingOptions.MaxBatchSize ({settings.MaxBatchSize}) times the row width ({Math.Max(program.InputWidth, program.OutputWidth)}) exceeds {int.MaxValue} elements.",
                nameof(options));
        }

        string name = string.IsNullOrEmpty(settings.Name) ? program.KernelType.Name : settings.Name;
        settings.Name = name;
        ILogger logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Batching.Ilgpu");
        (IReadOnlyList<IExecutionDevice<TIn, TOut>> gpus, IExecutionDevice<TIn, TOut>? fallback) = devices is null
            ? DeviceFactory.Create(program, gpuOptions, settings.MaxBatchSize, name, logger)
            : devices(settings.MaxBatchSize, logger);
        var router = new DeviceRouter<TIn, TOut>(gpus, fallback, gpuOptions.MaxRetries, name, logger, settings.TimeProvider ?? TimeProvider.System);
        try
        {
            if (raiseConcurrency)
            {
                // GPU default: as many batches as the devices hold in flight, so transfers and kernels overlap.
                settings.MaxConcurrentBatches = Math.Clamp(router.Capacity, 1, 1024);
            }

            IBatchProcessor<TIn, TOut> engine = BatchProcessor.Create<TIn, TOut>(router.RunAsync, settings);
            return new GpuProcessor<TIn, TOut>(engine, router, program.Check);
        }
        catch
        {
            router.Dispose();
            throw;
        }
    }

    /// <summary>A copy, so the caller's options object is never changed (the core offers no public clone).</summary>
    private static BatchingOptions Copy(BatchingOptions o) => new()
    {
        Name = o.Name,
        MaxBatchSize = o.MaxBatchSize,
        MaxDelay = o.MaxDelay,
        QueueCapacity = o.QueueCapacity,
        QueueFullMode = o.QueueFullMode,
        MaxConcurrentBatches = o.MaxConcurrentBatches,
        ExecutionTimeout = o.ExecutionTimeout,
        ShutdownTimeout = o.ShutdownTimeout,
        PoisonIsolationDepth = o.PoisonIsolationDepth,
        OutputCheck = o.OutputCheck,
        FlushPolicy = o.FlushPolicy,
        TimeProvider = o.TimeProvider,
    };
}
