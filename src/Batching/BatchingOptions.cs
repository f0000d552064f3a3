namespace Batching;

/// <summary>Settings of one batch processor. Validated when the processor is built.</summary>
public sealed class BatchingOptions
{
    /// <summary>The default of <see cref="MaxBatchSize"/>: 100.</summary>
    public const int DefaultMaxBatchSize = 100;

    /// <summary>The default of <see cref="QueueCapacity"/>: 10,000.</summary>
    public const int DefaultQueueCapacity = 10_000;

    /// <summary>The default of <see cref="MaxDelay"/>: 1 ms.</summary>
    public static readonly TimeSpan DefaultMaxDelay = TimeSpan.FromMilliseconds(1);

    /// <summary>The default of <see cref="ExecutionTimeout"/>: 30 s.</summary>
    public static readonly TimeSpan DefaultExecutionTimeout = TimeSpan.FromSeconds(30);

    /// <summary>The default of <see cref="ShutdownTimeout"/>: 10 s.</summary>
    public static readonly TimeSpan DefaultShutdownTimeout = TimeSpan.FromSeconds(10);

    /// <summary>The largest value <see cref="MaxBatchSize"/>, <see cref="QueueCapacity"/> and <see cref="MaxConcurrentBatches"/> accept: 16,777,216.</summary>
    public const int MaxCount = 1 << 24;

    /// <summary>The largest value <see cref="PriorityLevels"/> accepts: 16.</summary>
    public const int MaxPriorityLevels = ProcessorLoad.MaxPriorityLevels;

    /// <summary>The largest weight <see cref="PriorityWeights"/> accepts for one level: 1,000,000.</summary>
    public const int MaxPriorityWeight = 1_000_000;

    /// <summary>The largest value <see cref="PoisonIsolationDepth"/> accepts: 16.</summary>
    public const int MaxPoisonIsolationDepth = 16;

    /// <summary>A name for logs, metrics and error messages. Dependency injection sets it to the processor's key.</summary>
    /// <value>Default: <see langword="null"/>.</value>
    public string? Name { get; set; }

    /// <summary>The most items one handler call receives.</summary>
    /// <value>Default: 100. Allowed: 1 to <see cref="MaxCount"/>.</value>
    public int MaxBatchSize { get; set; } = DefaultMaxBatchSize;

    /// <summary>
    /// The longest a queued item waits before its batch is dispatched, measured from the moment its caller called
    /// <c>ProcessAsync</c> (time spent waiting for queue space included) and never reset by later arrivals. Every flush
    /// policy works within this bound. With the system clock it is honoured to about a millisecond (a dedicated thread
    /// waits on the precise monotonic clock, because .NET timers tick every 1 to 4 ms on Linux and 15.6 ms on Windows);
    /// with another <see cref="System.TimeProvider"/>, to its timers.
    /// </summary>
    /// <value>Default: 1 ms. Allowed: <see cref="TimeSpan.Zero"/> (dispatch at once) to 1 hour.</value>
    public TimeSpan MaxDelay { get; set; } = DefaultMaxDelay;

    /// <summary>The most items waiting in the queue (items in a running batch do not count).</summary>
    /// <value>Default: 10,000. Allowed: <see cref="MaxBatchSize"/> to <see cref="MaxCount"/>.</value>
    public int QueueCapacity { get; set; } = DefaultQueueCapacity;

    /// <summary>What a call does when the queue is full.</summary>
    /// <value>Default: <see cref="Batching.QueueFullMode.Wait"/>.</value>
    public QueueFullMode QueueFullMode { get; set; } = QueueFullMode.Wait;

    /// <summary>The most batches whose handler calls run at the same time.</summary>
    /// <value>Default: 1. Allowed: 1 to 1,024.</value>
    public int MaxConcurrentBatches { get; set; } = 1;

    /// <summary>
    /// How long one batch may run. Past it, the handler's token is cancelled, the batch's callers receive
    /// <see cref="TimeoutException"/>, and the batch's slot is freed so the processor keeps serving even if the
    /// handler ignores its token (its buffers are not reused until it returns). Any length works, however long
    /// (timers are re-armed in steps past the 49.7 days one .NET timer can wait).
    /// </summary>
    /// <value>Default: 30 s. Allowed: more than zero (up to <see cref="TimeSpan.MaxValue"/>), or <see cref="Timeout.InfiniteTimeSpan"/>.</value>
    public TimeSpan ExecutionTimeout { get; set; } = DefaultExecutionTimeout;

    /// <summary>How long <see cref="IAsyncDisposable.DisposeAsync"/> lets queued and running batches finish before it fails what is left.</summary>
    /// <value>Default: 10 s. Allowed: <see cref="TimeSpan.Zero"/> or more (up to <see cref="TimeSpan.MaxValue"/>), or <see cref="Timeout.InfiniteTimeSpan"/>.</value>
    public TimeSpan ShutdownTimeout { get; set; } = DefaultShutdownTimeout;

    /// <summary>
    /// When a batch fails, how many times to split it in halves and rerun each half so that only the failing
    /// ("poison") inputs fail. 0 turns isolation off: every caller of a failed batch fails. Depth d isolates single
    /// items in batches of up to 2^d items, at the cost of at most 2^(d+1) - 2 extra handler calls per failed batch.
    /// </summary>
    /// <value>Default: 0. Allowed: 0 to <see cref="MaxPoisonIsolationDepth"/>.</value>
    public int PoisonIsolationDepth { get; set; }

    /// <summary>
    /// The idle fast path: when a lone item arrives, a batch slot is free and the flush policy would dispatch it at
    /// once (as <see cref="FlushPolicy.Adaptive"/> does when nothing runs), run its batch on the caller's thread
    /// instead of waking the dispatcher. That saves two thread hops (well under a microsecond of added latency instead
    /// of a few), and a synchronous handler completes the call before <see cref="IBatchProcessor{TIn, TOut}.ProcessAsync(TIn, CancellationToken)"/>
    /// returns. The price: a handler that blocks its thread then holds that caller inside <c>ProcessAsync</c> for as
    /// long as it blocks, deaf to the caller's token and to <see cref="ExecutionTimeout"/>. Turn it on for handlers
    /// that are asynchronous (a GPU launch, an I/O call) or quick. The handler still runs in the clean
    /// ExecutionContext and its own batch activity, never in the caller's.
    /// </summary>
    /// <value>Default: <see langword="false"/>.</value>
    public bool InlineWhenIdle { get; set; }

    /// <summary>How outputs the handler left unwritten are detected.</summary>
    /// <value>Default: <see cref="Batching.OutputCheck.RejectNull"/>.</value>
    public OutputCheck OutputCheck { get; set; } = OutputCheck.RejectNull;

    /// <summary>When queued items become a batch. Use <see cref="FlushPolicy.Adaptive"/>, <see cref="FlushPolicy.Deadline"/>,
    /// <see cref="FlushPolicy.Size"/> or your own subclass.</summary>
    /// <value>Default: <see cref="FlushPolicy.Adaptive"/> with default <see cref="AdaptiveFlushOptions"/>: no wait at
    /// low load, batches that grow with load. (Before version 0.2 the default was <see cref="FlushPolicy.Deadline"/>,
    /// which waits out <see cref="MaxDelay"/> on every partial batch.)</value>
    public FlushPolicy FlushPolicy { get; set; } = FlushPolicy.Adaptive();

    /// <summary>
    /// How many priority levels calls may use (<see cref="RequestOptions.Priority"/> 0 to PriorityLevels - 1, 0 the most
    /// urgent). Each level is a FIFO lane; batches are filled from the lanes that have work by weighted fair sharing (see
    /// <see cref="PriorityWeights"/>), so a more urgent level gets the larger share and no level with work starves. With
    /// one level, the queue is one FIFO.
    /// </summary>
    /// <value>Default: 1. Allowed: 1 to <see cref="MaxPriorityLevels"/>.</value>
    public int PriorityLevels { get; set; } = 1;

    /// <summary>
    /// Each level's share of the items dispatched while several levels have work: level i gets
    /// <c>PriorityWeights[i] / (sum of the weights of the levels with work)</c> of them (deficit round robin in items:
    /// each turn a level with work takes up to its weight in items, across batch boundaries). The same shares apply to
    /// callers waiting for queue space when room frees.
    /// </summary>
    /// <value>Default: <see langword="null"/>: each level gets twice the share of the next (for 3 levels, 4 : 2 : 1).
    /// Allowed: exactly <see cref="PriorityLevels"/> weights, each 1 to <see cref="MaxPriorityWeight"/>.</value>
    public IReadOnlyList<int>? PriorityWeights { get; set; }

    /// <summary>
    /// The weight of one input (for example its token count), a <c>Func&lt;TIn, int&gt;</c> for the processor's input type
    /// (<c>options.ItemWeight = (string text) =&gt; text.Length;</c>). When set, a batch is bounded by
    /// <see cref="MaxBatchWeight"/> in total weight as well as by <see cref="MaxBatchSize"/> in items; the flush policy
    /// still decides in items. It is called once per input, on the caller's thread, before the input is queued; an input
    /// heavier than MaxBatchWeight, a negative weight, or a weight function that throws fails that call alone with
    /// <see cref="ArgumentException"/>.
    /// </summary>
    /// <value>Default: <see langword="null"/> (batches bounded by size only). Must be a <c>Func&lt;TIn, int&gt;</c> whose
    /// <c>TIn</c> is the processor's input type; set together with <see cref="MaxBatchWeight"/>.</value>
    public Delegate? ItemWeight { get; set; }

    /// <summary>The most total <see cref="ItemWeight"/> one batch may carry.</summary>
    /// <value>Default: 0 (unused). Allowed: 1 to <see cref="int.MaxValue"/> when <see cref="ItemWeight"/> is set; 0 when it is not.</value>
    public int MaxBatchWeight { get; set; }

    /// <summary>The clock for delays and timeouts. <see langword="null"/> uses the container's <see cref="System.TimeProvider"/>, else <see cref="TimeProvider.System"/>.</summary>
    /// <value>Default: <see langword="null"/>.</value>
    public TimeProvider? TimeProvider { get; set; }

    /// <summary>Checks every setting and throws for the first one out of range.</summary>
    /// <exception cref="ArgumentException">A setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public void Validate()
    {
        Require(MaxBatchSize is >= 1 and <= MaxCount, nameof(MaxBatchSize), $"must be between 1 and {MaxCount}", MaxBatchSize);
        Require(MaxDelay >= TimeSpan.Zero && MaxDelay <= TimeSpan.FromHours(1), nameof(MaxDelay), "must be between 00:00:00 and 01:00:00", MaxDelay);
        Require(QueueCapacity >= MaxBatchSize && QueueCapacity <= MaxCount, nameof(QueueCapacity), $"must be between MaxBatchSize ({MaxBatchSize}) and {MaxCount}", QueueCapacity);
        Require(Enum.IsDefined(QueueFullMode), nameof(QueueFullMode), "must be Wait or Reject", QueueFullMode);
        Require(MaxConcurrentBatches is >= 1 and <= 1024, nameof(MaxConcurrentBatches), "must be between 1 and 1024", MaxConcurrentBatches);
        Require(ExecutionTimeout > TimeSpan.Zero || ExecutionTimeout == Timeout.InfiniteTimeSpan, nameof(ExecutionTimeout), "must be more than zero, or Timeout.InfiniteTimeSpan", ExecutionTimeout);
        Require(ShutdownTimeout >= TimeSpan.Zero || ShutdownTimeout == Timeout.InfiniteTimeSpan, nameof(ShutdownTimeout), "must be zero or more, or Timeout.InfiniteTimeSpan", ShutdownTimeout);
        Require(PoisonIsolationDepth is >= 0 and <= MaxPoisonIsolationDepth, nameof(PoisonIsolationDepth), $"must be between 0 and {MaxPoisonIsolationDepth}", PoisonIsolationDepth);
        Require(PriorityLevels is >= 1 and <= MaxPriorityLevels, nameof(PriorityLevels), $"must be between 1 and {MaxPriorityLevels}", PriorityLevels);
        if (PriorityWeights is { } weights)
        {
            Require(weights.Count == PriorityLevels, nameof(PriorityWeights), $"must hold one weight per priority level ({PriorityLevels})", $"{weights.Count} weight(s)");
            for (int i = 0; i < weights.Count; i++)
            {
                Require(weights[i] is >= 1 and <= MaxPriorityWeight, nameof(PriorityWeights), $"[{i}] must be between 1 and {MaxPriorityWeight}", weights[i]);
            }
        }

        Require(ItemWeight is not null || MaxBatchWeight == 0, nameof(MaxBatchWeight), "must be 0 unless ItemWeight is set", MaxBatchWeight);
        Require(ItemWeight is null || MaxBatchWeight >= 1, nameof(MaxBatchWeight), "must be at least 1 when ItemWeight is set", MaxBatchWeight);
        Require(ItemWeight is null || (ItemWeight.GetType().IsGenericType && ItemWeight.GetType().GetGenericTypeDefinition() == typeof(Func<,>)
            && ItemWeight.GetType().GetGenericArguments()[1] == typeof(int)), nameof(ItemWeight), "must be a Func<TIn, int>", ItemWeight?.GetType().ToString() ?? "null");
        Require(Enum.IsDefined(OutputCheck), nameof(OutputCheck), "must be RejectNull, RejectDefault or None", OutputCheck);
        if (FlushPolicy is null)
        {
            throw new ArgumentNullException(nameof(FlushPolicy), "BatchingOptions.FlushPolicy must not be null; use FlushPolicy.Adaptive, Deadline or Size.");
        }

        FlushPolicy.Validate(this);
    }

    /// <summary>Returns a shallow copy (the <see cref="FlushPolicy"/> and <see cref="TimeProvider"/> instances are shared).
    /// Processors copy their options when built, so later changes to the original never reach a running processor.</summary>
    /// <returns>A new options object with the same settings.</returns>
    public BatchingOptions Clone() => (BatchingOptions)MemberwiseClone();

    /// <summary>The weight of each priority level, resolved (the default doubles per level, from the last level's 1).</summary>
    internal int[] ResolvePriorityWeights()
    {
        var weights = new int[PriorityLevels];
        for (int i = 0; i < weights.Length; i++)
        {
            weights[i] = PriorityWeights?[i] ?? 1 << (PriorityLevels - 1 - i);
        }

        return weights;
    }

    /// <summary>The weight function for a processor of <typeparamref name="TIn"/>; throws naming ItemWeight if it is another type's.</summary>
    internal Func<TIn, int>? ResolveItemWeight<TIn>() => ItemWeight switch
    {
        null => null,
        Func<TIn, int> weight => weight,
        _ => throw new ArgumentException($"BatchingOptions.ItemWeight must be a Func<{typeof(TIn).Name}, int> for this processor's input type; it was {ItemWeight.GetType()}.", nameof(ItemWeight)),
    };

    internal static void Require(bool condition, string setting, string rule, object value)
    {
        if (!condition)
        {
            throw new ArgumentException($"BatchingOptions.{setting} {rule}; it was {value}.", setting);
        }
    }
}
