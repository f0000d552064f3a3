using Microsoft.Extensions.Logging;

namespace Batching.Diagnostics;

internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "Batch processor '{Processor}' started: policy {Policy}, MaxBatchSize {MaxBatchSize}, MaxDelay {MaxDelay}, QueueCapacity {QueueCapacity} ({QueueFullMode} when full), MaxConcurrentBatches {MaxConcurrentBatches}, ExecutionTimeout {ExecutionTimeout}.")]
    public static partial void Started(ILogger logger, string processor, string policy, int maxBatchSize, TimeSpan maxDelay, int queueCapacity, QueueFullMode queueFullMode, int maxConcurrentBatches, TimeSpan executionTimeout);

    [LoggerMessage(2, LogLevel.Warning, "Batch processor '{Processor}': the handler failed a batch of {BatchSize} item(s).")]
    public static partial void BatchFailed(ILogger logger, string processor, int batchSize, Exception exception);

    [LoggerMessage(3, LogLevel.Warning, "Batch processor '{Processor}': a batch of {BatchSize} item(s) exceeded ExecutionTimeout {Timeout}; its callers were failed and its slot freed.")]
    public static partial void BatchTimedOut(ILogger logger, string processor, int batchSize, TimeSpan timeout);

    [LoggerMessage(4, LogLevel.Error, "Batch processor '{Processor}': the flush policy {Policy} threw; dispatching at once instead.")]
    public static partial void PolicyFailed(ILogger logger, string processor, string policy, Exception exception);

    [LoggerMessage(5, LogLevel.Information, "Batch processor '{Processor}' is shutting down: draining {Queued} queued item(s) and {InFlight} running batch(es) within {Timeout}.")]
    public static partial void Draining(ILogger logger, string processor, int queued, int inFlight, TimeSpan timeout);

    [LoggerMessage(6, LogLevel.Information, "Batch processor '{Processor}' stopped after draining in {Elapsed}.")]
    public static partial void Drained(ILogger logger, string processor, TimeSpan elapsed);

    [LoggerMessage(7, LogLevel.Warning, "Batch processor '{Processor}' stopped without finishing: {Failed} item(s) failed. Reason: {Reason}")]
    public static partial void Aborted(ILogger logger, string processor, int failed, string reason);

    [LoggerMessage(8, LogLevel.Critical, "Batch processor '{Processor}': the dispatcher failed unexpectedly; every queued and running item was failed and the processor stopped.")]
    public static partial void DispatcherFailed(ILogger logger, string processor, Exception exception);

    [LoggerMessage(9, LogLevel.Error, "Batch processor '{Processor}': a caller's continuation threw while it was resumed; its siblings were resumed regardless.")]
    public static partial void ContinuationFailed(ILogger logger, string processor, Exception exception);

    [LoggerMessage(10, LogLevel.Warning, "Batch processor '{Processor}': a telemetry listener (ActivityListener or MeterListener) threw; the measurement was dropped.")]
    public static partial void ListenerFailed(ILogger logger, string processor, Exception exception);

    [LoggerMessage(20, LogLevel.Information, "Generation processor '{Processor}' started: MaxSequences {MaxSequences}, QueueCapacity {QueueCapacity} ({QueueFullMode} when full), MaxTokensPerSequence {MaxTokens}, MaxBufferedTokens {MaxBuffered}, StepTimeout {StepTimeout}.")]
    public static partial void GenerationStarted(ILogger logger, string processor, int maxSequences, int queueCapacity, QueueFullMode queueFullMode, int maxTokens, int maxBuffered, TimeSpan stepTimeout);

    [LoggerMessage(21, LogLevel.Warning, "Generation processor '{Processor}': the step failed for {Sequences} sequence(s); they were failed and the processor goes on.")]
    public static partial void StepFailed(ILogger logger, string processor, int sequences, Exception exception);

    [LoggerMessage(22, LogLevel.Warning, "Generation processor '{Processor}': a step of {Sequences} sequence(s) exceeded StepTimeout {Timeout}; they were failed and the next step started.")]
    public static partial void StepTimedOut(ILogger logger, string processor, int sequences, TimeSpan timeout);

    [LoggerMessage(23, LogLevel.Information, "Generation processor '{Processor}' is shutting down: finishing {Active} active and {Queued} queued sequence(s) within {Timeout}.")]
    public static partial void GenerationDraining(ILogger logger, string processor, int active, int queued, TimeSpan timeout);

    [LoggerMessage(24, LogLevel.Warning, "Generation processor '{Processor}' stopped without finishing: {Failed} sequence(s) failed. Reason: {Reason}")]
    public static partial void GenerationAborted(ILogger logger, string processor, int failed, string reason);

    [LoggerMessage(25, LogLevel.Critical, "Generation processor '{Processor}': the step loop failed unexpectedly; every sequence was failed and the processor stopped.")]
    public static partial void GenerationLoopFailed(ILogger logger, string processor, Exception exception);
}
