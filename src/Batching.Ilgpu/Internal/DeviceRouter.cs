using System.Diagnostics;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;

namespace Batching.Ilgpu.Internal;

/// <summary>
/// Sends each batch to the healthy GPU device with the least outstanding work, quarantines a device that faults or
/// hangs, re-routes its batch (at most MaxRetries times), and runs the batch on the managed CPU path when no GPU
/// device is left. This is the processor's batch handler.
/// </summary>
/// <remarks>
/// All routing state (in-flight counts, health, waiters) is guarded by <see cref="_gate"/>; device calls and waiter
/// completions happen outside it. A batch holds a device's slot from <see cref="TryAcquire"/> until its run ends;
/// a faulted device keeps the slots of the batches that failed on it, since its buffers may still be in use.
/// </remarks>
internal sealed class DeviceRouter<TIn, TOut> : IGpuDiagnostics
{
    private readonly object _gate = new();
    private readonly Entry[] _gpus;
    private readonly Entry? _fallback;
    private readonly Queue<TaskCompletionSource> _waiters = new();
    private readonly int _maxRetries;
    private readonly string _processorName;
    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;
    private int _rotation;
    private bool _announcedFallback;
    private bool _disposed;

    public DeviceRouter(IReadOnlyList<IExecutionDevice<TIn, TOut>> gpus, IExecutionDevice<TIn, TOut>? fallback, int maxRetries,
        string processorName, ILogger logger, TimeProvider timeProvider)
    {
        _gpus = gpus.Select(d => new Entry(d, isFallback: false)).ToArray();
        _fallback = fallback is null ? null : new Entry(fallback, isFallback: true);
        _maxRetries = maxRetries;
        _processorName = processorName;
        _logger = logger;
        _timeProvider = timeProvider;
    }

    /// <summary>The total in-flight capacity of the GPU devices, or of the fallback when there are none.</summary>
    public int Capacity => _gpus.Length > 0 ? _gpus.Sum(e => e.Device.MaxInFlight) : _fallback?.Device.MaxInFlight ?? 1;

    public bool HasHealthyGpu
    {
        get
        {
            lock (_gate)
            {
                return _gpus.Any(e => e.Healthy);
            }
        }
    }

    public IReadOnlyList<GpuDeviceStatus> GetDevices()
    {
        lock (_gate)
        {
            return _gpus.Append(_fallback).OfType<Entry>().Select(e => e.Snapshot()).ToArray();
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask RunAsync(ReadOnlyMemory<TIn> inputs, Memory<TOut> outputs, CancellationToken cancellationToken)
    {
        Exception? lastFault = null;
        for (int attempt = 0; attempt <= _maxRetries && lastFault is not LaunchConfigurationException; attempt++)
        {
            Entry? entry = await AcquireGpuAsync(cancellationToken).ConfigureAwait(false);
            if (entry is null)
            {
                break;
            }

            try
            {
                await entry.Device.RunAsync(inputs, outputs, cancellationToken).ConfigureAwait(false);
                Finish(entry, succeeded: true);
                return;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                Finish(entry, succeeded: true);
                throw;
            }
            catch (LaunchConfigurationException ex)
            {
                // The device is fine, but this batch's shape is beyond its launch limits: the next path runs it.
                lastFault = ex;
                Finish(entry, succeeded: false);
                Log.LaunchRejected(_logger, ex, _processorName, inputs.Length, entry.Device.Name);
            }
            catch (ArgumentException)
            {
                // A bad batch, not a bad device.
                Finish(entry, succeeded: false);
                throw;
            }
            catch (Exception ex)
            {
                lastFault = ex;
                Fault(entry, ex);
                Log.BatchRerouted(_logger, _processorName, inputs.Length, entry.Device.Name, attempt + 1);
            }
        }

        if (_fallback is null)
        {
            throw new InvalidOperationException(lastFault is LaunchConfigurationException
                ? $"A batch of {inputs.Length} item(s) of '{_processorName}' exceeds the GPU's launch limits and GpuOptions.FallbackToCpu is off; the batch could not run."
                : $"No healthy GPU device is left in '{_processorName}' and GpuOptions.FallbackToCpu is off; the batch could not run.", lastFault);
        }

        if (_gpus.Length > 0 && lastFault is not LaunchConfigurationException)
        {
            AnnounceFallback();
        }

        Entry cpu = _fallback;
        lock (_gate)
        {
            cpu.InFlight++;
        }

        bool ok = false;
        try
        {
            await cpu.Device.RunAsync(inputs, outputs, cancellationToken).ConfigureAwait(false);
            ok = true;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            ok = true;
            throw;
        }
        finally
        {
            Finish(cpu, ok);
        }
    }

    /// <summary>Releases every device after the engine has drained. Failures are logged, never thrown.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
        }

        foreach (Entry entry in _gpus.Append(_fallback).OfType<Entry>())
        {
            bool release;
            lock (_gate)
            {
                // A hung device too: if its launch has finished meanwhile it is freed; if not, it refuses and keeps
                // everything (StreamDevice.Release), so this can never free memory a launch still uses.
                release = !entry.Released;
                entry.Released |= release;
            }

            if (release)
            {
                SafeRelease(entry, faulted: !entry.Healthy);
            }
        }
    }

    private async ValueTask<Entry?> AcquireGpuAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            TaskCompletionSource waiter;
            lock (_gate)
            {
                if (TryAcquire(out Entry? entry))
                {
                    return entry;
                }

                if (entry is null)
                {
                    return null;
                }

                // Every healthy device is full; only possible while the engine runs more batches than the devices hold.
                waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _waiters.Enqueue(waiter);
            }

            await waiter.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Takes a slot on the least loaded healthy GPU. False with a null entry: no healthy GPU at all.</summary>
    private bool TryAcquire(out Entry? entry)
    {
        Debug.Assert(Monitor.IsEntered(_gate));
        entry = null;
        Entry? best = null;
        bool anyHealthy = false;
        int n = _gpus.Length;
        for (int k = 0; k < n; k++)
        {
            // Rotating the starting point spreads ties across devices.
            Entry candidate = _gpus[(_rotation + k) % n];
            if (!candidate.Healthy)
            {
                continue;
            }

            anyHealthy = true;
            if (candidate.InFlight < candidate.Device.MaxInFlight &&
                (best is null || (long)candidate.InFlight * best.Device.MaxInFlight < (long)best.InFlight * candidate.Device.MaxInFlight))
            {
                best = candidate;
            }
        }

        if (best is null)
        {
            entry = anyHealthy ? _gpus[0] : null;
            return false;
        }

        _rotation = (_rotation + 1) % Math.Max(1, n);
        best.InFlight++;
        entry = best;
        return true;
    }

    private void Finish(Entry entry, bool succeeded)
    {
        TaskCompletionSource? wake = null;
        bool releaseNow;
        lock (_gate)
        {
            entry.InFlight--;
            releaseNow = TakeReleaseLocked(entry);
            if (succeeded)
            {
                entry.Completed++;
            }
            else
            {
                entry.Failed++;
            }

            _waiters.TryDequeue(out wake);
        }

        wake?.TrySetResult();
        if (releaseNow)
        {
            ReleaseInBackground(entry);
        }
    }

    /// <summary>Whether a quarantined device has nothing left running on it and should be released now.</summary>
    private bool TakeReleaseLocked(Entry entry)
    {
        Debug.Assert(Monitor.IsEntered(_gate));
        bool release = !entry.Healthy && !entry.Hung && !entry.Released && !_disposed && entry.FaultedInFlight == entry.InFlight;
        entry.Released |= release;
        return release;
    }

    private void ReleaseInBackground(Entry entry)
    {
        // Guarded, and off the caller's thread: disposing a faulted CUDA context can throw or block.
        var thread = new Thread(() => SafeRelease(entry, faulted: true)) { IsBackground = true, Name = "Batching.Ilgpu release" };
        thread.Start();
    }

    private void Fault(Entry entry, Exception error)
    {
        TaskCompletionSource[] wake;
        bool firstFault;
        bool releaseNow;
        lock (_gate)
        {
            entry.Failed++;
            firstFault = entry.Healthy;
            if (firstFault)
            {
                entry.Healthy = false;
                entry.FaultReason = $"{error.GetType().Name}: {error.Message}";
                entry.FaultedAt = _timeProvider.GetUtcNow();
            }

            // A hung launch keeps its slot and may still touch device memory: such a device is never released.
            entry.Hung |= error is TimeoutException;
            entry.FaultedInFlight++;
            releaseNow = TakeReleaseLocked(entry);

            // Waiters re-check: with this device gone, some may now have to fall back.
            wake = [.. _waiters];
            _waiters.Clear();
        }

        if (firstFault)
        {
            Log.DeviceFaulted(_logger, error, _processorName, entry.Device.Name, entry.FaultReason!);
        }

        foreach (TaskCompletionSource w in wake)
        {
            w.TrySetResult();
        }

        if (releaseNow)
        {
            ReleaseInBackground(entry);
        }
    }

    private void SafeRelease(Entry entry, bool faulted)
    {
        try
        {
            entry.Device.Release(faulted);
        }
        catch (Exception ex)
        {
            Log.ReleaseFailed(_logger, ex, _processorName, entry.Device.Name);
        }
    }

    private void AnnounceFallback()
    {
        lock (_gate)
        {
            if (_announcedFallback)
            {
                return;
            }

            _announcedFallback = true;
        }

        Log.FallingBackToCpu(_logger, _processorName);
    }

    private sealed class Entry(IExecutionDevice<TIn, TOut> device, bool isFallback)
    {
        public IExecutionDevice<TIn, TOut> Device { get; } = device;

        public bool IsFallback { get; } = isFallback;

        public bool Healthy { get; set; } = true;

        public bool Hung { get; set; }

        public bool Released { get; set; }

        public int InFlight { get; set; }

        /// <summary>Batches that failed on this device and still hold its slots.</summary>
        public int FaultedInFlight { get; set; }

        public long Completed { get; set; }

        public long Failed { get; set; }

        public string? FaultReason { get; set; }

        public DateTimeOffset? FaultedAt { get; set; }

        public GpuDeviceStatus Snapshot() =>
            new(Device.Name, Device.Kind, IsFallback, Healthy, InFlight - FaultedInFlight, Device.MaxInFlight, Completed, Failed, FaultReason, FaultedAt);
    }
}
