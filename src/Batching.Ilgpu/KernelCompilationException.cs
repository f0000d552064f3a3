namespace Batching.Ilgpu;

/// <summary>Thrown at start-up when ILGPU cannot compile a kernel struct; the processor is not created.</summary>
public sealed class KernelCompilationException : Exception
{
    /// <summary>Creates the exception with a default message.</summary>
    public KernelCompilationException() : base("The kernel could not be compiled.") { }

    /// <summary>Creates the exception with <paramref name="message"/>.</summary>
    /// <param name="message">The message.</param>
    public KernelCompilationException(string message) : base(message) { }

    /// <summary>Creates the exception with <paramref name="message"/> and the compiler's exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The compiler's exception.</param>
    public KernelCompilationException(string message, Exception innerException) : base(message, innerException) { }

    internal KernelCompilationException(Type kernelType, string target, Exception innerException)
        : base($"The kernel {kernelType.FullName} could not be compiled for {target}: {innerException.GetBaseException().Message} " +
               "Kernels may use value types only: no classes, strings, exceptions (throw), recursion or boxing.", innerException)
    {
        KernelType = kernelType;
    }

    /// <summary>The kernel struct that failed to compile, when known.</summary>
    public Type? KernelType { get; }
}
