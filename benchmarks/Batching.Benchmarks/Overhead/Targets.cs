using System.Threading.Channels;
using System.Threading.Tasks.Dataflow;

namespace Batching.Benchmarks.Overhead;

internal static class NoOpHandler
{
    public static long Batches;
    public static long Items;

    /// <summary>The no-op handler every target runs: outputs[i] = inputs[i] * 2 + 1.</summary>
    public static readonly BatchHandler<int, int> Instance = static (inputs, outputs, _) =>
    {
        // Every target runs one batch at a time, so plain increments are exact; the probe mode reports them.
        Batches++;
        Items += inputs.Length;
        ReadOnlySpan<int> source = inputs.Span;
        Span<int> target = outputs.Span;
        for (int i = 0; i < source.Length; i++)
        {
            target[i] = unchecked(source[i] * 2 + 1);
        }

        return ValueTask.CompletedTask;
    };
}

/// <summary>The handler called directly, one call of <paramref name="items"/> items at a time: the floor for added latency
/// (one item) and for the per-item cost of a multi-item call.</summary>
internal sealed class DirectTarget(int callers, int items = 1) : BufferedItemsTarget(callers, items)
{
    protected override ValueTask RunAsync(int[] inputs, int[] outputs) => NoOpHandler.Instance(inputs, outputs, CancellationToken.None);
}

/// <summary>This library; a null policy keeps the default. With several priority levels, caller i calls at level
/// i mod <paramref name="priorityLevels"/> (through the <see cref="RequestOptions"/> overload).</summary>
internal sealed class LibraryTarget(FlushPolicy? policy, bool inlineWhenIdle = false, int priorityLevels = 1) : RequestTarget
{
    private readonly IBatchProcessor<int, int> _processor = CreateProcessor(policy, inlineWhenIdle, priorityLevels);

    /// <summary>The processor every library target measures: the no-op handler, MaxBatchSize 100, otherwise defaults.</summary>
    internal static IBatchProcessor<int, int> CreateProcessor(FlushPolicy? policy = null, bool inlineWhenIdle = false, int priorityLevels = 1)
    {
        var options = new BatchingOptions { MaxBatchSize = OverheadBenchmarks.MaxBatchSize, InlineWhenIdle = inlineWhenIdle, PriorityLevels = priorityLevels };
        if (policy is not null)
        {
            options.FlushPolicy = policy;
        }

        return BatchProcessor.Create(NoOpHandler.Instance, options);
    }

    public override ValueTask<int> CallAsync(int caller, int input) => priorityLevels == 1
        ? _processor.ProcessAsync(input)
        : _processor.ProcessAsync(input, new RequestOptions(caller % priorityLevels));

    public override ValueTask DisposeAsync() => _processor.DisposeAsync();
}

/// <summary>
/// The baseline: what a competent user writes by hand. A bounded channel of (input, TaskCompletionSource) with the
/// same capacity as the library's default queue (so both offer backpressure), one consumer loop that takes whatever
/// is queued up to MaxBatchSize, runs the handler and completes the callers. No timer: it never waits for a fuller
/// batch, which is the fastest choice for this closed-loop load.
/// </summary>
internal sealed class ChannelTarget : RequestTarget
{
    private readonly Channel<(int Input, TaskCompletionSource<int> Caller)> _channel =
        Channel.CreateBounded<(int, TaskCompletionSource<int>)>(new BoundedChannelOptions(BatchingOptions.DefaultQueueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });

    private readonly Task _consumer;

    public ChannelTarget() => _consumer = Task.Run(ConsumeAsync);

    public override ValueTask<int> CallAsync(int caller, int input) => new(ProcessAsync(input));

    private Task<int> ProcessAsync(int input)
    {
        // Asynchronous continuations keep callers' code off the consumer loop.
        var completion = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        return _channel.Writer.TryWrite((input, completion)) ? completion.Task : WriteSlowAsync(input, completion);
    }

    private async Task<int> WriteSlowAsync(int input, TaskCompletionSource<int> completion)
    {
        await _channel.Writer.WriteAsync((input, completion)).ConfigureAwait(false);
        return await completion.Task.ConfigureAwait(false);
    }

    private async Task ConsumeAsync()
    {
        int max = OverheadBenchmarks.MaxBatchSize;
        var inputs = new int[max];
        var outputs = new int[max];
        var callers = new TaskCompletionSource<int>[max];
        ChannelReader<(int Input, TaskCompletionSource<int> Caller)> reader = _channel.Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            int count = 0;
            while (count < max && reader.TryRead(out var item))
            {
                inputs[count] = item.Input;
                callers[count] = item.Caller;
                count++;
            }

            try
            {
                await NoOpHandler.Instance(inputs.AsMemory(0, count), outputs.AsMemory(0, count), CancellationToken.None).ConfigureAwait(false);
                for (int i = 0; i < count; i++)
                {
                    callers[i].TrySetResult(outputs[i]);
                }
            }
            catch (Exception ex)
            {
                for (int i = 0; i < count; i++)
                {
                    callers[i].TrySetException(ex);
                }
            }

            Array.Clear(callers, 0, count);
        }
    }

    public override async ValueTask DisposeAsync()
    {
        _channel.Writer.Complete();
        await _consumer.ConfigureAwait(false);
    }
}

/// <summary>
/// The usual TPL Dataflow workaround: a BatchBlock of MaxBatchSize feeding an ActionBlock, and a timer calling
/// TriggerBatch every MaxDelay so that partial batches do not wait forever.
/// </summary>
internal sealed class DataflowTarget : RequestTarget
{
    private readonly BatchBlock<(int Input, TaskCompletionSource<int> Caller)> _batches;
    private readonly ActionBlock<(int Input, TaskCompletionSource<int> Caller)[]> _runner;
    private readonly Timer _trigger;
    private readonly int[] _inputs = new int[OverheadBenchmarks.MaxBatchSize];
    private readonly int[] _outputs = new int[OverheadBenchmarks.MaxBatchSize];

    public DataflowTarget()
    {
        _batches = new BatchBlock<(int, TaskCompletionSource<int>)>(OverheadBenchmarks.MaxBatchSize);
        _runner = new ActionBlock<(int Input, TaskCompletionSource<int> Caller)[]>(RunAsync, new ExecutionDataflowBlockOptions { MaxDegreeOfParallelism = 1 });
        _batches.LinkTo(_runner, new DataflowLinkOptions { PropagateCompletion = true });
        _trigger = new Timer(static state => ((BatchBlock<(int, TaskCompletionSource<int>)>)state!).TriggerBatch(),
            _batches, BatchingOptions.DefaultMaxDelay, BatchingOptions.DefaultMaxDelay);
    }

    public override ValueTask<int> CallAsync(int caller, int input)
    {
        var completion = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_batches.Post((input, completion)))
        {
            completion.SetException(new InvalidOperationException("The BatchBlock declined the item."));
        }

        return new ValueTask<int>(completion.Task);
    }

    private async Task RunAsync((int Input, TaskCompletionSource<int> Caller)[] batch)
    {
        for (int i = 0; i < batch.Length; i++)
        {
            _inputs[i] = batch[i].Input;
        }

        try
        {
            await NoOpHandler.Instance(_inputs.AsMemory(0, batch.Length), _outputs.AsMemory(0, batch.Length), CancellationToken.None).ConfigureAwait(false);
            for (int i = 0; i < batch.Length; i++)
            {
                batch[i].Caller.TrySetResult(_outputs[i]);
            }
        }
        catch (Exception ex)
        {
            foreach (var item in batch)
            {
                item.Caller.TrySetException(ex);
            }
        }
    }

    public override async ValueTask DisposeAsync()
    {
        await _trigger.DisposeAsync().ConfigureAwait(false);
        _batches.Complete();
        await _runner.Completion.ConfigureAwait(false);
    }
}
