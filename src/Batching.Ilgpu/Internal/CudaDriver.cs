using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using ILGPU;

namespace Batching.Ilgpu.Internal;

/// <summary>
/// ILGPU imports the CUDA driver as "cuda", which .NET probes as libcuda.so; driver-only installs (containers, the
/// NVIDIA runtime image) often ship only libcuda.so.1. Resolving it here keeps CUDA from being skipped silently.
/// </summary>
internal static class CudaDriver
{
    private static readonly string[] Candidates = ["libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1"];
    private static int s_installed;
    private static string? s_resolvedPath;

    /// <summary>The file the resolver loaded, when it had to (null when libcuda.so resolved normally or not at all).</summary>
    public static string? ResolvedPath => Volatile.Read(ref s_resolvedPath);

    /// <summary>Installs the resolver once, before the first ILGPU context probes CUDA.</summary>
    public static void EnsureResolver()
    {
        if (!OperatingSystem.IsLinux() || Interlocked.Exchange(ref s_installed, 1) == 1)
        {
            return;
        }

        Assembly ilgpu = typeof(Context).Assembly;
        try
        {
            NativeLibrary.SetDllImportResolver(ilgpu, (name, assembly, path) => Resolve(name, assembly, path));
        }
        catch (InvalidOperationException)
        {
            // ILGPU or the app set a resolver first; this event still runs after default probing fails.
            AssemblyLoadContext.Default.ResolvingUnmanagedDll += (assembly, name) => assembly == ilgpu ? Resolve(name, assembly, null) : IntPtr.Zero;
        }
    }

    /// <summary>Resolves the CUDA driver import: the default probe first, then libcuda.so.1.</summary>
    internal static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName is not ("cuda" or "libcuda" or "libcuda.so"))
        {
            return IntPtr.Zero;
        }

        if (NativeLibrary.TryLoad(libraryName, assembly, searchPath, out IntPtr handle))
        {
            return handle;
        }

        foreach (string candidate in Candidates)
        {
            if (NativeLibrary.TryLoad(candidate, out handle))
            {
                Volatile.Write(ref s_resolvedPath, candidate);
                return handle;
            }
        }

        return IntPtr.Zero;
    }
}
