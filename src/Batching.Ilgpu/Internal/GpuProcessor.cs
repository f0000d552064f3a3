using System.Diagnostics.Metrics;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Batching.Ilgpu.Internal;

/// <summary>The processor callers see: rejects bad input before it is queued (so it fails only its own caller),
/// then hands the item to the core engine, whose batch handler is the device router. Reports device health to
/// health checks and per-device gauges to the "Batching" meter.</summary>
internal sealed class GpuProcessor<TIn, TOut> : IGpuBatchProcessor<TIn, TOut>, IBatchingHealthContributor, IDisposable
{
    private readonly IBatchProcessor<TIn, TOut> _engine;
    private readonly DeviceRouter<TIn, TOut> _router;
    private readonly Func<TIn, string?> _check;
    private readonly Meter? _ownedMeter;

    public GpuProcessor(IBatchProcessor<TIn, TOut> engine, DeviceRouter<TIn, TOut> router, Func<TIn, string?> check, string name, IMeterFactory? meterFactory)
    {
        _engine = engine;
        _router = router;
        _check = check;
        Name = name;
        var options = new MeterOptions(BatchingTelemetry.MeterName) { Tags = [new(BatchingTelemetry.ProcessorTag, name)] };
        Meter meter = meterFactory?.Create(options) ?? (_ownedMeter = new Meter(options));
        meter.CreateObservableGauge("batching.device.healthy", () => Measure(d => d.IsHealthy ? 1 : 0), "{device}",
            "1 while a device (or device instance) takes batches, 0 once it is quarantined after a fault.");
        meter.CreateObservableUpDownCounter("batching.device.in_flight", () => Measure(d => d.InFlightBatches), "{batch}",
            "Batches running on a device now.");
    }

    public string Name { get; }

    public bool HasHealthyGpu => _router.HasHealthyGpu;

    public IReadOnlyList<GpuDeviceStatus> GetDevices() => _router.GetDevices();

    public ValueTask<TOut> ProcessAsync(TIn input, CancellationToken cancellationToken = default)
    {
        string? problem = _check(input);
        return problem is null
            ? _engine.ProcessAsync(input, cancellationToken)
            : ValueTask.FromException<TOut>(new ArgumentException(problem, nameof(input)));
    }

    public ValueTask<TOut> ProcessAsync(TIn input, RequestOptions options, CancellationToken cancellationToken = default)
    {
        string? problem = _check(input);
        return problem is null
            ? _engine.ProcessAsync(input, options, cancellationToken)
            : ValueTask.FromException<TOut>(new ArgumentException(problem, nameof(input)));
    }

    /// <summary>A request of k rows (or items): every input is checked first, so a bad one fails the call before any
    /// is queued; the engine splits the rest across batches as for any multi-item call.</summary>
    public ValueTask ProcessManyAsync(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, RequestOptions options = default, CancellationToken cancellationToken = default)
    {
        ReadOnlySpan<TIn> span = inputs.Span;
        for (int i = 0; i < span.Length; i++)
        {
            if (_check(span[i]) is { } problem)
            {
                return ValueTask.FromException(new ArgumentException($"inputs[{i}]: {problem} Nothing was queued.", nameof(inputs)));
            }
        }

        return _engine.ProcessManyAsync(inputs, outputs, options, cancellationToken);
    }

    public ProcessorLoad GetLoad() => _engine.GetLoad();

    /// <summary>
    /// The engine's own health, made worse by the devices': Degraded when a device was quarantined or only the
    /// CPU fallback is left, Unhealthy when no device can run a batch.
    /// </summary>
    public HealthCheckResult CheckHealth()
    {
        HealthCheckResult engine = _engine is IBatchingHealthContributor contributor ? contributor.CheckHealth() : HealthCheckResult.Healthy();
        IReadOnlyList<GpuDeviceStatus> devices = _router.GetDevices();
        var data = new Dictionary<string, object>(engine.Data);
        foreach (GpuDeviceStatus device in devices)
        {
            data[$"device:{device.Name}"] = device.IsHealthy ? $"healthy, {device.InFlightBatches}/{device.MaxInFlightBatches} in flight" : $"quarantined: {device.FaultReason}";
        }

        GpuDeviceStatus[] faulted = [.. devices.Where(d => !d.IsHealthy)];
        if (!devices.Any(d => d.IsHealthy))
        {
            return HealthCheckResult.Unhealthy($"'{Name}' has no execution path left: every device is quarantined.", data: data);
        }

        if (engine.Status != HealthStatus.Healthy || faulted.Length == 0)
        {
            return new HealthCheckResult(engine.Status, engine.Description, engine.Exception, data);
        }

        string which = string.Join(", ", faulted.Select(d => $"{d.Name} ({d.FaultReason})"));
        string mode = _router.HasHealthyGpu ? "serving on the remaining devices" : "serving on the managed CPU fallback";
        return HealthCheckResult.Degraded($"'{Name}' lost {faulted.Length} device(s): {which}; {mode}.", data: data);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _engine.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            _router.Dispose();
            _ownedMeter?.Dispose();
        }
    }

    /// <summary>For hosts that dispose synchronously: blocks until <see cref="DisposeAsync"/> completes.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private IEnumerable<Measurement<int>> Measure(Func<GpuDeviceStatus, int> value)
    {
        foreach (GpuDeviceStatus device in _router.GetDevices())
        {
            yield return new Measurement<int>(value(device),
                new KeyValuePair<string, object?>(BatchingTelemetry.ProcessorTag, Name),
                new KeyValuePair<string, object?>("batching.device", device.Name),
                new KeyValuePair<string, object?>("batching.device.kind", device.Kind.ToString()));
        }
    }
}

/// <summary>Starts a processor's devices; tests and benchmarks substitute fakes for <see cref="DeviceFactory"/>.</summary>
internal delegate (IReadOnlyList<IExecutionDevice<TIn, TOut>> Gpus, IExecutionDevice<TIn, TOut>? Fallback) DeviceStarter<TIn, TOut, TDevIn, TDevOut>(
    KernelProgram<TIn, TOut, TDevIn, TDevOut> program, int maxBatchSize, ILogger logger)
    where TDevIn : unmanaged
    where TDevOut : unmanaged;

/// <summary>Builds processors: validates settings, starts the devices, and wires the router into the core engine.</summary>
internal static class GpuProcessorBuilder
{
    public static GpuProcessor<TIn, TOut> Build<TIn, TOut, TDevIn, TDevOut>(
        KernelProgram<TIn, TOut, TDevIn, TDevOut> program,
        GpuOptions gpuOptions,
        BatchingOptions? options,
        ILoggerFactory? loggerFactory,
        IMeterFactory? meterFactory,
        DeviceStarter<TIn, TOut, TDevIn, TDevOut>? devices = null)
        where TDevIn : unmanaged
        where TDevOut : unmanaged
    {
        gpuOptions.Validate();
        BatchingOptions settings = (options ?? new BatchingOptions()).Clone();
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
            : devices(program, settings.MaxBatchSize, logger);
        var router = new DeviceRouter<TIn, TOut>(gpus, fallback, gpuOptions.MaxRetries, name, logger, settings.TimeProvider ?? TimeProvider.System);
        try
        {
            if (raiseConcurrency)
            {
                // GPU default: as many batches as the devices hold in flight, so transfers and kernels overlap.
                settings.MaxConcurrentBatches = Math.Clamp(router.Capacity, 1, 1024);
            }

            IBatchProcessor<TIn, TOut> engine = BatchProcessor.Create<TIn, TOut>(router.RunAsync, settings, loggerFactory, meterFactory);
            return new GpuProcessor<TIn, TOut>(engine, router, program.Check, name, meterFactory);
        }
        catch
        {
            router.Dispose();
            throw;
        }
    }
}
