using Batching.Diagnostics;
using Microsoft.Extensions.Logging;

namespace Batching.Internal.Execution;

/// <summary>What the engine does when a batch changes state; the batch's only way back to the processor.</summary>
internal interface IBatchOwner<TIn, TOut>
{
    /// <summary>The handler (and any poison isolation) returned. Frees the batch's slot if it still holds one and moves it
    /// from Running to Completing; a batch that already timed out or was abandoned stays so.</summary>
    /// <returns>The batch's state afterwards.</returns>
    BatchState OnHandlerReturned(Batch<TIn, TOut> batch, TimeSpan duration, bool succeeded);

    /// <summary>The handler returned a pending task (<paramref name="pending"/> true), or that task completed (false).</summary>
    void OnHandlerPending(bool pending);

    /// <summary>The batch's execution-timeout timer fired (maybe for an earlier use of the batch object).</summary>
    void OnExecutionTimer(Batch<TIn, TOut> batch);

    /// <summary>A batch finished resuming its callers inline, or a resume stalled: its slot, and partial batches, may go
    /// again. <paramref name="signalDispatcher"/> is false when the caller runs the dispatcher itself next
    /// (<see cref="TakeNextBatchHere"/>).</summary>
    void OnResumeBurstClosed(bool signalDispatcher);

    /// <summary>Runs the dispatcher on this thread if nobody else is running it, and returns the first batch it started,
    /// for this thread to run; null when the dispatcher is busy elsewhere (it is signalled) or started nothing.</summary>
    Batch<TIn, TOut>? TakeNextBatchHere();

    /// <summary>The batch is idle again and may be reused.</summary>
    void OnRetired(Batch<TIn, TOut> batch);
}

/// <summary>What a processor learns about its handler as it runs (racy reads are fine: it only ever turns on).</summary>
internal sealed class HandlerShape
{
    private volatile bool _completesAsynchronously;

    /// <summary>The handler has returned a pending task at least once.</summary>
    public bool CompletesAsynchronously
    {
        get => _completesAsynchronously;
        set => _completesAsynchronously |= value;
    }
}

/// <summary>
/// Everything a batch needs from its processor, fixed when the processor is built: no reference to the engine's
/// queue, policy or slots.
/// </summary>
internal sealed class BatchContext<TIn, TOut>
{
    // Constants per instantiation once the JIT tiers up; they keep the output check free of boxing for value types.
    private static readonly bool s_outputIsReference = !typeof(TOut).IsValueType;
    private static readonly bool s_outputIsNullable = Nullable.GetUnderlyingType(typeof(TOut)) is not null;

    public BatchContext(IBatchOwner<TIn, TOut> owner, BatchHandler<TIn, TOut> handler, TimeProvider time, ProcessorTelemetry telemetry,
        ILogger logger, string name, TimeSpan executionTimeout, int poisonIsolationDepth, OutputCheck outputCheck)
    {
        Owner = owner;
        Handler = handler;
        Time = time;
        Telemetry = telemetry;
        Logger = logger;
        Name = name;
        ExecutionTimeout = executionTimeout;
        PoisonIsolationDepth = poisonIsolationDepth;
        OutputCheck = outputCheck;
    }

    public IBatchOwner<TIn, TOut> Owner { get; }

    /// <summary>What the processor has learned about its handler.</summary>
    public HandlerShape Shape { get; } = new();

    public BatchHandler<TIn, TOut> Handler { get; }

    public TimeProvider Time { get; }

    public ProcessorTelemetry Telemetry { get; }

    /// <summary>Already guarded: a throwing logging provider cannot reach the engine.</summary>
    public ILogger Logger { get; }

    public string Name { get; }

    public TimeSpan ExecutionTimeout { get; }

    public int PoisonIsolationDepth { get; }

    public OutputCheck OutputCheck { get; }

    public bool IsMissing(TOut output)
    {
        switch (OutputCheck)
        {
            case OutputCheck.RejectNull:
                if (s_outputIsReference)
                {
                    return output is null;
                }

                return s_outputIsNullable && EqualityComparer<TOut>.Default.Equals(output, default!);
            case OutputCheck.RejectDefault:
                return EqualityComparer<TOut>.Default.Equals(output, default!);
            default:
                return false;
        }
    }

    public BatchExecutionException HandlerFailure(Exception error, int batchSize) =>
        new($"The batch handler of '{Name}' threw {error.GetType().Name} for a batch of {batchSize} item(s): {error.Message}", error, batchSize);

    public BatchExecutionException MissingOutput(int index, int batchSize)
    {
        string value = OutputCheck == OutputCheck.RejectNull ? "null" : "default";
        return new($"The batch handler of '{Name}' returned without writing outputs[{index}] (it still held {value}); " +
            $"a handler must write one output per input. Set BatchingOptions.OutputCheck to None if {value} is a valid result.", null, batchSize);
    }

    public TimeoutException TimeoutFailure(int batchSize) =>
        new($"The batch of {batchSize} item(s) in '{Name}' did not complete within ExecutionTimeout ({ExecutionTimeout}); its handler was cancelled.");
}
