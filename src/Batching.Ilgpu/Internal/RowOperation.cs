using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;
using Batching.Internal;

namespace Batching.Ilgpu.Internal;

/// <summary>
/// One pending <see cref="IGpuRowProcessor{T}.ProcessRowAsync"/> call, pooled: it waits for the engine's call, then
/// closes the row's guard, then completes the caller. It is a consume-once source (as the engine's own requests), so a
/// caller who misuses the returned ValueTask — GetResult while pending, a second await — gets an
/// InvalidOperationException and nothing else: the operation returns to the pool only after its one successful
/// consumption, and can never resume another caller.
/// </summary>
/// <remarks>The same operation serves the convenient form, whose result is the new array the row was written into.</remarks>
internal sealed class RowOperation<T> : ConsumeOnceValueTaskSource<T[]?>, IValueTaskSource
    where T : unmanaged
{
    private readonly Action _onEngineCompleted;
    private ConfiguredValueTaskAwaitable<RowWritten>.ConfiguredValueTaskAwaiter _awaiter;
    private RowGuard? _guard;
    private int _version;
    private T[]? _array;

    public RowOperation() => _onEngineCompleted = OnEngineCompleted;

    public static ValueTask Start(GpuProcessor<RowCall<T>, RowWritten> engine, ReadOnlyMemory<T> input, Memory<T> output, RequestOptions options,
        CancellationToken cancellationToken)
    {
        (RowOperation<T>? operation, short token, Exception? error) = Begin(engine, input, output, null, options, cancellationToken);
        return operation is not null ? new ValueTask(operation, token) : error is null ? default : ValueTask.FromException(error);
    }

    /// <summary>The convenient form: a new array per row, returned when it holds the result.</summary>
    public static ValueTask<T[]> StartArray(GpuProcessor<RowCall<T>, RowWritten> engine, ReadOnlyMemory<T> input, int outputWidth, RequestOptions options,
        CancellationToken cancellationToken)
    {
        var array = new T[outputWidth];
        (RowOperation<T>? operation, short token, Exception? error) = Begin(engine, input, array, array, options, cancellationToken);
        return operation is not null ? new ValueTask<T[]>(operation!, token) : error is null ? new ValueTask<T[]>(array) : ValueTask.FromException<T[]>(error);
    }

    private static (RowOperation<T>? Operation, short Token, Exception? Error) Begin(GpuProcessor<RowCall<T>, RowWritten> engine, ReadOnlyMemory<T> input,
        Memory<T> output, T[]? array, RequestOptions options, CancellationToken cancellationToken)
    {
        RowGuard guard = RowGuard.Rent(out int version);
        ValueTask<RowWritten> call;
        try
        {
            call = engine.ProcessAsync(new RowCall<T>(input, output, guard, version), options, cancellationToken);
        }
        catch (Exception ex)
        {
            guard.Release(version);
            return (null, 0, ex);
        }

        if (call.IsCompleted)
        {
            // Refused, or served inline: no operation needed.
            Exception? error = Outcome(call.ConfigureAwait(false).GetAwaiter());
            guard.Release(version);
            return (null, 0, error);
        }

        RowOperation<T> operation = CallCache<RowOperation<T>>.Rent();
        operation.Reset();
        operation._guard = guard;
        operation._version = version;
        operation._array = array;
        operation._awaiter = call.ConfigureAwait(false).GetAwaiter();
        short token = operation.Token;
        operation._awaiter.UnsafeOnCompleted(operation._onEngineCompleted);
        return (operation, token, null);
    }

    void IValueTaskSource.GetResult(short token) => GetResult(token);

    protected override void OnConsumed() => CallCache<RowOperation<T>>.Return(this);

    private void OnEngineCompleted()
    {
        Exception? error = Outcome(_awaiter);
        _awaiter = default;
        RowGuard guard = _guard!;
        _guard = null;

        // Closed before the caller resumes: from here on no batch can touch its buffers.
        guard.Release(_version);

        T[]? array = _array;
        _array = null;

        // Inline, as the engine resumes its callers: this runs inside the engine's watched resumption.
        Complete(array, error, inline: true);
    }

    private static Exception? Outcome(ConfiguredValueTaskAwaitable<RowWritten>.ConfiguredValueTaskAwaiter awaiter)
    {
        try
        {
            return awaiter.GetResult().Error;
        }
        catch (Exception ex)
        {
            return ex;
        }
    }
}
