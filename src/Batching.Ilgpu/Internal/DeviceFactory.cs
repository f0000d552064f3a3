using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using Microsoft.Extensions.Logging;

namespace Batching.Ilgpu.Internal;

/// <summary>Chooses and starts the devices of one processor, and says why in the log.</summary>
internal static class DeviceFactory
{
    // What ILGPU 1.5.3 targets for current cards (it emits sm_80 PTX for an SM_90 H200, which the driver JITs).
    private static readonly CudaArchitecture DefaultArchitecture = CudaArchitecture.SM_80;
    private static readonly CudaInstructionSet DefaultInstructionSet = CudaInstructionSet.ISA_80;

    public static (List<IExecutionDevice<TIn, TOut>> Gpus, IExecutionDevice<TIn, TOut>? Fallback) Create<TIn, TOut, TDevIn, TDevOut>(
        KernelProgram<TIn, TOut, TDevIn, TDevOut> program, GpuOptions options, int maxBatchSize, string processorName, ILogger logger)
        where TDevIn : unmanaged
        where TDevOut : unmanaged
    {
        string kernelName = program.KernelType.FullName ?? program.KernelType.Name;
        IExecutionDevice<TIn, TOut> managed = new ManagedCpuDevice<TIn, TOut, TDevIn, TDevOut>(program, options.MaxBatchesInFlightPerDevice);
        IExecutionDevice<TIn, TOut>? fallback = options.FallbackToCpu ? managed : null;

        switch (options.Device)
        {
            case GpuDevicePreference.ManagedCpu:
                ValidateWithoutCuda(program, options, logger);
                Log.DeviceSelected(logger, processorName, kernelName, managed.Name, managed.Kind, "GpuOptions.Device is ManagedCpu");
                return ([], managed);

            case GpuDevicePreference.IlgpuCpu:
                ValidateWithoutCuda(program, options, logger);
                var simulator = new DeviceCandidate<TIn, TOut>("ilgpu-cpu", GpuDeviceKind.IlgpuCpu,
                    "GpuOptions.Device is IlgpuCpu (ILGPU's CPU simulator, for tests and debugging only)",
                    () => StartIlgpu("ilgpu-cpu", GpuDeviceKind.IlgpuCpu, Context.Create(builder => builder.CPU().EnableAlgorithms()),
                        context => context.CreateCPUAccelerator(0), program, options, maxBatchSize));
                List<IExecutionDevice<TIn, TOut>> started = Start([simulator], processorName, kernelName, logger, out string? whyNot);
                return started.Count > 0
                    ? (started, fallback)
                    : throw new InvalidOperationException($"GpuOptions.Device is IlgpuCpu, but ILGPU's CPU accelerator could not be started for '{processorName}': {whyNot}");
        }

        List<(int Index, int Id, string Name, CudaArchitecture Architecture, CudaInstructionSet InstructionSet)> found =
            FindCudaDevices(options, logger, out string? whyNone);
        if (found.Count > 0)
        {
            KernelValidator.ValidateForCuda(program.KernelType, program.EntryPoint, found[0].Architecture, found[0].InstructionSet, logger);
        }

        var candidates = new List<DeviceCandidate<TIn, TOut>>();
        foreach (var device in found)
        {
            for (int instance = 0; instance < options.InstancesPerDevice; instance++)
            {
                string name = $"cuda:{device.Id} {device.Name}" + (options.InstancesPerDevice > 1 ? $" #{instance}" : "");
                int index = device.Index;

                // A Context of its own per device instance: a fault in one cannot poison another. Blocking sync: the
                // completion thread sleeps in cuStreamSynchronize instead of spinning a core (ILGPU's default is Auto).
                candidates.Add(new DeviceCandidate<TIn, TOut>(name, GpuDeviceKind.Cuda,
                    $"CUDA is preferred; {device.Architecture}, {options.MaxBatchesInFlightPerDevice} batch(es) in flight",
                    () => StartIlgpu(name, GpuDeviceKind.Cuda, Context.Create(builder => builder.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O1)),
                        context => context.CreateCudaAccelerator(index, CudaAcceleratorFlags.ScheduleBlockingSync), program, options, maxBatchSize)));
            }
        }

        List<IExecutionDevice<TIn, TOut>> gpus = Start(candidates, processorName, kernelName, logger, out string? whyFailed);
        whyNone = whyFailed ?? whyNone;
        if (gpus.Count > 0)
        {
            return (gpus, fallback);
        }

        if (options.Device == GpuDevicePreference.Cuda)
        {
            throw new InvalidOperationException($"GpuOptions.Device is Cuda, but no CUDA device can be used for '{processorName}': {whyNone}");
        }

        ValidateWithoutCuda(program, options, logger);
        Log.CpuFallbackChosen(logger, processorName, kernelName, whyNone ?? "no CUDA device");
        return (gpus, managed);
    }

    /// <summary>
    /// Starts every candidate that can start. A device that fails to start (no memory for its buffers or parameters, a
    /// driver error) is skipped with a log line; a kernel that does not compile fails the whole processor, since no
    /// device will compile it. If anything escapes, the devices already started are released first: nothing of a
    /// processor that was never returned stays allocated.
    /// </summary>
    internal static List<IExecutionDevice<TIn, TOut>> Start<TIn, TOut>(IEnumerable<DeviceCandidate<TIn, TOut>> candidates, string processorName,
        string kernelName, ILogger logger, out string? whyNone)
    {
        var started = new List<IExecutionDevice<TIn, TOut>>();
        whyNone = null;
        try
        {
            foreach (DeviceCandidate<TIn, TOut> candidate in candidates)
            {
                try
                {
                    started.Add(candidate.Start());
                    Log.DeviceSelected(logger, processorName, kernelName, candidate.Name, candidate.Kind, candidate.Reason);
                }
                catch (Exception ex) when (ex is not KernelCompilationException)
                {
                    // OutOfMemoryException included: ILGPU raises it for device and page-locked allocations too.
                    Log.DeviceStartFailed(logger, ex, processorName, candidate.Name);
                    whyNone = $"{candidate.Name} failed to start: {ex.GetType().Name}: {ex.Message}";
                }
            }

            return started;
        }
        catch
        {
            foreach (IExecutionDevice<TIn, TOut> device in started)
            {
                try
                {
                    device.Release(faulted: false);
                }
                catch (Exception releaseError)
                {
                    Log.ReleaseFailed(logger, releaseError, processorName, device.Name);
                }
            }

            throw;
        }
    }

    private static IExecutionDevice<TIn, TOut> StartIlgpu<TIn, TOut, TDevIn, TDevOut>(string name, GpuDeviceKind kind, Context context,
        Func<Context, Accelerator> createAccelerator, KernelProgram<TIn, TOut, TDevIn, TDevOut> program, GpuOptions options, int maxBatchSize)
        where TDevIn : unmanaged
        where TDevOut : unmanaged
    {
        Accelerator accelerator;
        try
        {
            accelerator = createAccelerator(context);
        }
        catch
        {
            Disposal.Dispose(context, suppressFinalizer: true);
            throw;
        }

        IlgpuBackend<TDevIn, TDevOut> backend = IlgpuBackend<TDevIn, TDevOut>.Start(context, accelerator, program, name);
        return StreamDevice<TIn, TOut, TDevIn, TDevOut>.Create(name, kind, backend, program, maxBatchSize, options.MaxBatchesInFlightPerDevice, options.LaunchTimeout);
    }

    private static void ValidateWithoutCuda<TIn, TOut, TDevIn, TDevOut>(KernelProgram<TIn, TOut, TDevIn, TDevOut> program, GpuOptions options, ILogger logger)
        where TDevIn : unmanaged
        where TDevOut : unmanaged
    {
        if (options.ValidateKernelWithoutCuda)
        {
            KernelValidator.ValidateForCuda(program.KernelType, program.EntryPoint, DefaultArchitecture, DefaultInstructionSet, logger);
        }
    }

    private static List<(int, int, string, CudaArchitecture, CudaInstructionSet)> FindCudaDevices(GpuOptions options, ILogger logger, out string? whyNone)
    {
        CudaDriver.EnsureResolver();
        var found = new List<(int, int, string, CudaArchitecture, CudaInstructionSet)>();
        whyNone = null;
        try
        {
            using Context probe = Context.Create(builder => builder.Cuda());
            var devices = probe.GetCudaDevices();
            for (int index = 0; index < devices.Count; index++)
            {
                CudaDevice device = devices[index];
                if (options.CudaDeviceIds is { Count: > 0 } ids && !ids.Contains(device.DeviceId))
                {
                    continue;
                }

                CudaArchitecture architecture = device.Architecture is { } a ? a : DefaultArchitecture;
                CudaInstructionSet instructionSet = device.InstructionSet is { } i ? i : DefaultInstructionSet;
                found.Add((index, device.DeviceId, device.Name, architecture, instructionSet));
            }

            if (found.Count == 0)
            {
                whyNone = devices.Count == 0
                    ? "no CUDA device was found (no NVIDIA driver, libcuda, or GPU)"
                    : $"none of the {devices.Count} CUDA device(s) is in GpuOptions.CudaDeviceIds";
            }
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            whyNone = $"probing CUDA failed: {ex.GetType().Name}: {ex.Message}";
        }

        if (CudaDriver.ResolvedPath is { } path)
        {
            Log.CudaDriverResolved(logger, path);
        }

        return found;
    }
}

/// <summary>A device that may be started: its name, why it would be chosen, and how to start it.</summary>
internal sealed record DeviceCandidate<TIn, TOut>(string Name, GpuDeviceKind Kind, string Reason, Func<IExecutionDevice<TIn, TOut>> Start);
