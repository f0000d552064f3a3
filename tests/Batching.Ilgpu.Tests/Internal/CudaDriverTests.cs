using Batching.Ilgpu.Internal;

namespace Batching.Ilgpu.Tests.Internal;

public class CudaDriverTests
{
    [Fact]
    public void The_resolver_ignores_other_libraries()
    {
        Assert.Equal(IntPtr.Zero, CudaDriver.Resolve("OpenCL", typeof(ILGPU.Context).Assembly, null));
    }

    [Fact]
    public void Without_a_driver_the_resolver_finds_nothing_and_installing_it_twice_is_harmless()
    {
        CudaDriver.EnsureResolver();
        CudaDriver.EnsureResolver();
        if (!File.Exists("/usr/lib/x86_64-linux-gnu/libcuda.so.1"))
        {
            Assert.Equal(IntPtr.Zero, CudaDriver.Resolve("cuda", typeof(ILGPU.Context).Assembly, null));
            Assert.Null(CudaDriver.ResolvedPath);
        }
    }
}
