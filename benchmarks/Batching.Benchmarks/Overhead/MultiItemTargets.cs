using System.Runtime.CompilerServices;

namespace Batching.Benchmarks.Overhead;

/// <summary>The items of one multi-item call: item 0 is the caller's input, item j differs from it in bits 26 and up,
/// so every output can be traced to its input (callers use bits 20 to 25 while there are at most 64 of them).</summary>
internal static class MultiItem
{
    public static int Input(int first, int index) => first ^ (index << 26);

    public static void Fill(Span<int> inputs, int first)
    {
        for (int j = 0; j < inputs.Length; j++)
        {
            inputs[j] = Input(first, j);
        }
    }

    /// <summary>Checks outputs 1 and up against the no-op handler's rule and returns output 0, which the caller checks.</summary>
    public static int Check(ReadOnlySpan<int> inputs, ReadOnlySpan<int> outputs)
    {
        for (int j = 1; j < inputs.Length; j++)
        {
            CheckOne(inputs[j], outputs[j]);
        }

        return outputs[0];
    }

    public static void CheckOne(int input, int output)
    {
        if (output != unchecked(input * 2 + 1))
        {
            Environment.FailFast($"Got {output} for input {input}: an output reached the wrong item.");
        }
    }
}

/// <summary>
/// k single-item calls at once: the caller issues k <c>ProcessAsync</c> calls back to back, then awaits them all. What
/// a user without <c>ProcessManyAsync</c> writes for k items (the library's default options, MaxBatchSize 100).
/// </summary>
internal sealed class SingleCallsTarget(int callers, int items) : RequestTarget
{
    private readonly IBatchProcessor<int, int> _processor = LibraryTarget.CreateProcessor();
    private readonly ValueTask<int>[][] _pending = [.. Enumerable.Range(0, callers).Select(_ => new ValueTask<int>[items])];

    public override int ItemsPerCall => items;

    public override ValueTask<int> CallAsync(int caller, int input)
    {
        ValueTask<int>[] pending = _pending[caller];
        for (int j = 0; j < pending.Length; j++)
        {
            pending[j] = _processor.ProcessAsync(MultiItem.Input(input, j));
        }

        return AwaitAllAsync(pending, input);
    }

    // Pooled: the benchmark's own state machine must not allocate per call (ProcessManyAsync's caller uses the same).
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<int> AwaitAllAsync(ValueTask<int>[] pending, int input)
    {
        int first = await pending[0].ConfigureAwait(false);
        for (int j = 1; j < pending.Length; j++)
        {
            MultiItem.CheckOne(MultiItem.Input(input, j), await pending[j].ConfigureAwait(false));
        }

        Array.Clear(pending);
        return first;
    }

    public override ValueTask DisposeAsync() => _processor.DisposeAsync();
}

/// <summary>A target that serves a call from per-caller input and output buffers of k items: fills the inputs, runs
/// them all at once, checks the outputs.</summary>
internal abstract class BufferedItemsTarget(int callers, int items) : RequestTarget
{
    private readonly int[][] _inputs = [.. Enumerable.Range(0, callers).Select(_ => new int[items])];
    private readonly int[][] _outputs = [.. Enumerable.Range(0, callers).Select(_ => new int[items])];

    public override int ItemsPerCall => items;

    public override ValueTask<int> CallAsync(int caller, int input)
    {
        int[] inputs = _inputs[caller], outputs = _outputs[caller];
        MultiItem.Fill(inputs, input);
        ValueTask pending = RunAsync(inputs, outputs);
        if (pending.IsCompletedSuccessfully)
        {
            pending.GetAwaiter().GetResult(); // consume a pooled source
            return new ValueTask<int>(MultiItem.Check(inputs, outputs));
        }

        return AwaitAsync(pending, inputs, outputs);
    }

    /// <summary>Computes <paramref name="outputs"/> for <paramref name="inputs"/>.</summary>
    protected abstract ValueTask RunAsync(int[] inputs, int[] outputs);

    // Pooled: the benchmark's own state machine must not allocate per call.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<int> AwaitAsync(ValueTask pending, int[] inputs, int[] outputs)
    {
        await pending.ConfigureAwait(false);
        return MultiItem.Check(inputs, outputs);
    }
}

/// <summary>One <c>ProcessManyAsync</c> call of k items (the library's default options, MaxBatchSize 100: calls are split
/// across batches where they straddle one).</summary>
internal sealed class ManyCallTarget(int callers, int items) : BufferedItemsTarget(callers, items)
{
    private readonly IBatchProcessor<int, int> _processor = LibraryTarget.CreateProcessor();

    protected override ValueTask RunAsync(int[] inputs, int[] outputs) => _processor.ProcessManyAsync(inputs, outputs);

    public override ValueTask DisposeAsync() => _processor.DisposeAsync();
}
