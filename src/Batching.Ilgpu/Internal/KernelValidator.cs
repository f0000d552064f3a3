using System.Diagnostics;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Microsoft.Extensions.Logging;

namespace Batching.Ilgpu.Internal;

/// <summary>
/// Compiles a kernel to PTX in a Context of its own, which needs no GPU. A failed compile leaves an ILGPU Context
/// unusable for every later compile, so this one is thrown away whatever happens and the devices never see it.
/// </summary>
internal static class KernelValidator
{
    public static void ValidateForCuda(Type kernelType, System.Reflection.MethodInfo entryPoint, CudaArchitecture architecture, CudaInstructionSet instructionSet, ILogger logger)
    {
        long started = Stopwatch.GetTimestamp();
        try
        {
            using Context context = Context.Create(builder => builder.EnableAlgorithms().Optimize(OptimizationLevel.O1));
            using var backend = new PTXBackend(context, architecture, instructionSet, null!);
            _ = backend.Compile(EntryPointDescription.FromImplicitlyGroupedKernel(entryPoint), default(KernelSpecialization));
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw new KernelCompilationException(kernelType, $"CUDA {architecture} (PTX {instructionSet})", ex);
        }

        Log.KernelValidated(logger, kernelType.FullName ?? kernelType.Name, architecture.ToString(), (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }
}
