using System.Buffers;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Batching.Ilgpu.Internal;

/// <summary>
/// The row processor callers see. Underneath, the engine carries <see cref="RowCall{T}"/>s (the caller's input and
/// output buffers plus a guard), so a batch's results are copied straight into the callers' buffers: no array per row
/// and, with the pooled async state below, nothing allocated per call in steady state. The <c>T[]</c> calls of
/// <see cref="IBatchProcessor{TIn, TOut}"/> allocate the result array and go the same way.
/// </summary>
/// <remarks>Each call rents a <see cref="RowGuard"/> and closes it when the engine has completed the call (result,
/// failure, timeout or cancellation), before the caller resumes: from then on no batch can touch its buffers.</remarks>
internal sealed class GpuRowProcessor<T> : IGpuRowProcessor<T>, IBatchingHealthContributor, IDisposable
    where T : unmanaged
{
    private readonly GpuProcessor<RowCall<T>, RowWritten> _inner;

    public GpuRowProcessor(GpuProcessor<RowCall<T>, RowWritten> inner, int inputWidth, int outputWidth)
    {
        _inner = inner;
        InputWidth = inputWidth;
        OutputWidth = outputWidth;
    }

    public int InputWidth { get; }

    public int OutputWidth { get; }

    public string Name => _inner.Name;

    public bool HasHealthyGpu => _inner.HasHealthyGpu;

    public IReadOnlyList<GpuDeviceStatus> GetDevices() => _inner.GetDevices();

    public ProcessorLoad GetLoad() => _inner.GetLoad();

    public HealthCheckResult CheckHealth() => _inner.CheckHealth();

    public ValueTask ProcessRowAsync(ReadOnlyMemory<T> input, Memory<T> output, RequestOptions options = default, CancellationToken cancellationToken = default)
    {
        if ((CheckRow(input, nameof(input)) ?? CheckOutput(output.Length, nameof(output))) is { } problem)
        {
            return ValueTask.FromException(problem);
        }

        return RowOperation<T>.Start(_inner, input, output, options, cancellationToken);
    }

    public ValueTask ProcessRowsAsync(ReadOnlyMemory<T> inputs, Memory<T> outputs, RequestOptions options = default, CancellationToken cancellationToken = default)
    {
        if (inputs.Length % InputWidth != 0)
        {
            return ValueTask.FromException(new ArgumentException(
                $"inputs holds {inputs.Length} values, which is not a whole number of rows of InputWidth {InputWidth}. Nothing was queued.", nameof(inputs)));
        }

        int rows = inputs.Length / InputWidth;
        if (outputs.Length != (long)rows * OutputWidth)
        {
            return ValueTask.FromException(new ArgumentException(
                $"outputs holds {outputs.Length} values; {rows} row(s) of OutputWidth {OutputWidth} need {(long)rows * OutputWidth}. Nothing was queued.", nameof(outputs)));
        }

        return rows == 0 ? default : RunRowsAsync(inputs, outputs, rows, options, cancellationToken);
    }

    public ValueTask<T[]> ProcessAsync(ReadOnlyMemory<T> input, CancellationToken cancellationToken = default) =>
        ProcessAsync(input, default, cancellationToken);

    public ValueTask<T[]> ProcessAsync(ReadOnlyMemory<T> input, RequestOptions options, CancellationToken cancellationToken = default) =>
        CheckRow(input, nameof(input)) is { } problem
            ? ValueTask.FromException<T[]>(problem)
            : RowOperation<T>.StartArray(_inner, input, OutputWidth, options, cancellationToken);

    public ValueTask ProcessManyAsync(ReadOnlyMemory<ReadOnlyMemory<T>> inputs, Memory<T[]> outputs, RequestOptions options = default,
        CancellationToken cancellationToken = default)
    {
        if (outputs.Length != inputs.Length)
        {
            return ValueTask.FromException(new ArgumentException(
                $"outputs.Length ({outputs.Length}) must equal inputs.Length ({inputs.Length}). Nothing was queued.", nameof(outputs)));
        }

        ReadOnlySpan<ReadOnlyMemory<T>> rows = inputs.Span;
        for (int i = 0; i < rows.Length; i++)
        {
            if (CheckRow(rows[i], nameof(inputs)) is { } problem)
            {
                return ValueTask.FromException(new ArgumentException($"inputs[{i}]: {problem.Message} Nothing was queued.", nameof(inputs)));
            }
        }

        return inputs.Length == 0 ? default : RunArraysAsync(inputs, outputs, options, cancellationToken);
    }

    public ValueTask DisposeAsync() => _inner.DisposeAsync();

    public void Dispose() => _inner.Dispose();

    // The async methods below use the default builder, whose state is never pooled: a caller who misuses the returned
    // ValueTask can only hurt itself. They run per multi-row call, not per row.
    private ValueTask RunRowsAsync(ReadOnlyMemory<T> inputs, Memory<T> outputs, int rows, RequestOptions options, CancellationToken cancellationToken)
    {
        // One guard for the whole call: its rows complete together, and every batch that carries some of them writes
        // inside it.
        RowGuard guard = RowGuard.Rent(out int version);
        RowCall<T>[] calls = ArrayPool<RowCall<T>>.Shared.Rent(rows);
        for (int i = 0; i < rows; i++)
        {
            calls[i] = new RowCall<T>(inputs.Slice(i * InputWidth, InputWidth), outputs.Slice(i * OutputWidth, OutputWidth), guard, version);
        }

        return RunCallsAsync(calls, rows, guard, version, options, cancellationToken);
    }

    private async ValueTask RunArraysAsync(ReadOnlyMemory<ReadOnlyMemory<T>> inputs, Memory<T[]> outputs, RequestOptions options, CancellationToken cancellationToken)
    {
        int rows = inputs.Length;
        var results = new T[rows][];
        RowGuard guard = RowGuard.Rent(out int version);
        RowCall<T>[] calls = ArrayPool<RowCall<T>>.Shared.Rent(rows);
        for (int i = 0; i < rows; i++)
        {
            results[i] = new T[OutputWidth];
            calls[i] = new RowCall<T>(inputs.Span[i], results[i], guard, version);
        }

        try
        {
            await RunCallsAsync(calls, rows, guard, version, options, cancellationToken).ConfigureAwait(false);
        }
        catch (BatchExecutionException ex) when (ex.ItemFailures.Count > 0)
        {
            // As for any multi-item call: the rows of the parts that succeeded are handed out, the failed ones not.
            Span<T[]> target = outputs.Span;
            int next = 0;
            foreach (BatchItemFailure failure in ex.ItemFailures.OrderBy(f => f.StartIndex))
            {
                results.AsSpan(next, failure.StartIndex - next).CopyTo(target[next..]);
                next = Math.Max(next, failure.StartIndex + failure.Count);
            }

            results.AsSpan(next).CopyTo(target[next..]);
            throw;
        }

        results.CopyTo(outputs);
    }

    /// <summary>Runs k rows as one multi-item call, then closes their guard and returns the rented arrays. A row whose
    /// buffer could not be read or written fails the call, naming it.</summary>
    private async ValueTask RunCallsAsync(RowCall<T>[] calls, int rows, RowGuard guard, int version, RequestOptions options, CancellationToken cancellationToken)
    {
        RowWritten[] written = ArrayPool<RowWritten>.Shared.Rent(rows);
        try
        {
            await _inner.ProcessManyAsync(calls.AsMemory(0, rows), written.AsMemory(0, rows), options, cancellationToken).ConfigureAwait(false);
            for (int i = 0; i < rows; i++)
            {
                if (written[i].Error is { } error)
                {
                    throw new ArgumentException($"Row {i}'s buffer could not be used: {error.Message}", "inputs", error);
                }
            }
        }
        finally
        {
            guard.Release(version);
            ArrayPool<RowCall<T>>.Shared.Return(calls, clearArray: true);
            ArrayPool<RowWritten>.Shared.Return(written, clearArray: true);
        }
    }

    private ArgumentException? CheckRow(ReadOnlyMemory<T> input, string parameter) =>
        input.Length == InputWidth
            ? null
            : new ArgumentException($"The row has {input.Length} values; the processor's InputWidth is {InputWidth}.", parameter);

    private ArgumentException? CheckOutput(int length, string parameter) =>
        length == OutputWidth
            ? null
            : new ArgumentException($"The output buffer has {length} values; the processor's OutputWidth is {OutputWidth}.", parameter);
}
