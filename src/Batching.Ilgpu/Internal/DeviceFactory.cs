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
        var gpus = new List<IExecutionDevice<TIn, TOut>>();
        IExecutionDevice<TIn, TOut> managed = new ManagedCpuDevice<TIn, TOut, TDevIn, TDevOut>(program, options.MaxBatchesInFlightPerDevice);
        IExecutionDevice<TIn, TOut>? fallback = options.FallbackToCpu ? managed : null;

        switch (options.Device)
        {
            case GpuDevicePreference.ManagedCpu:
                ValidateWithoutCuda(program, options, logger);
                Log.DeviceSelected(logger, processorName, kernelName, managed.Name, managed.Kind, "GpuOptions.Device is ManagedCpu");
                return (gpus, managed);

            case GpuDevicePreference.IlgpuCpu:
                ValidateWithoutCuda(program, options, logger);
                Context context = Context.Create(builder => builder.CPU().EnableAlgorithms());
                Accelerator accelerator;
                try
                {
                    accelerator = context.CreateCPUAccelerator(0);
                }
                catch
                {
                    context.Dispose();
                    throw;
                }

                gpus.Add(IlgpuDevice<TIn, TOut, TDevIn, TDevOut>.Create("ilgpu-cpu", GpuDeviceKind.IlgpuCpu, context, accelerator, program, maxBatchSize,
                    options.MaxBatchesInFlightPerDevice, options.LaunchTimeout));
                Log.DeviceSelected(logger, processorName, kernelName, "ilgpu-cpu", GpuDeviceKind.IlgpuCpu,
                    "GpuOptions.Device is IlgpuCpu (ILGPU's CPU simulator, for tests and debugging only)");
                return (gpus, fallback);
        }

        List<(int Index, int Id, string Name, CudaArchitecture Architecture, CudaInstructionSet InstructionSet)> found =
            FindCudaDevices(options, logger, out string? whyNone);
        if (found.Count > 0)
        {
            KernelValidator.ValidateForCuda(program.KernelType, program.EntryPoint, found[0].Architecture, found[0].InstructionSet, logger);
        }

        foreach (var device in found)
        {
            for (int instance = 0; instance < options.InstancesPerDevice; instance++)
            {
                string name = $"cuda:{device.Id} {device.Name}" + (options.InstancesPerDevice > 1 ? $" #{instance}" : "");
                Context? context = null;
                try
                {
                    // A Context of its own per device instance: a fault or a failed compile in one cannot poison another.
                    context = Context.Create(builder => builder.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O1));
                    CudaAccelerator accelerator = context.CreateCudaAccelerator(device.Index);
                    gpus.Add(IlgpuDevice<TIn, TOut, TDevIn, TDevOut>.Create(name, GpuDeviceKind.Cuda, context, accelerator, program, maxBatchSize,
                        options.MaxBatchesInFlightPerDevice, options.LaunchTimeout));
                    Log.DeviceSelected(logger, processorName, kernelName, name, GpuDeviceKind.Cuda,
                        $"CUDA is preferred; {device.Architecture}, {options.MaxBatchesInFlightPerDevice} batch(es) in flight");
                }
                catch (KernelCompilationException)
                {
                    throw;
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    if (context is not null)
                    {
                        GC.SuppressFinalize(context);
                        try
                        {
                            context.Dispose();
                        }
                        catch (Exception)
                        {
                            // Already failing; the start error below is the one to report.
                        }
                    }

                    Log.DeviceStartFailed(logger, ex, processorName, name);
                    whyNone = $"{name} failed to start: {ex.Message}";
                }
            }
        }

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
