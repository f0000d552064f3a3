using System.Collections.Concurrent;
using System.Diagnostics;

namespace Batching.Tests.Reliability;

/// <summary>How one <c>ProcessAsync</c> call ended, as the <see cref="Ledger"/> books it.</summary>
internal enum Outcome
{
    /// <summary>Returned the expected output for its input.</summary>
    Succeeded,

    /// <summary><see cref="BatchExecutionException"/> (handler threw, or left the output unwritten) or <see cref="TimeoutException"/> (ExecutionTimeout).</summary>
    Failed,

    /// <summary><see cref="OperationCanceledException"/>, and the caller's own token was cancelled.</summary>
    Cancelled,

    /// <summary><see cref="BatchQueueFullException"/> (Reject mode) or <see cref="ObjectDisposedException"/> (disposed processor).</summary>
    Rejected,

    /// <summary>Returned an output other than the expected one: always a bug.</summary>
    Wrong,

    /// <summary>Any other exception, or a cancellation the caller never asked for: always a bug.</summary>
    Unexpected,
}

/// <summary>Raised when a ledger does not balance: a lost, hung, wrong or unexplained call.</summary>
internal sealed class LedgerException(string message) : Exception(message);

/// <summary>
/// Books every <c>ProcessAsync</c> call of a scenario by outcome, so that
/// submitted = succeeded + failed + cancelled + rejected holds with no wrong result, no unexplained exception
/// and no call still pending (hung) once the scenario settles. Thread-safe; memory is bounded by the calls
/// pending, so the soak can use it for millions of calls.
/// </summary>
internal sealed class Ledger
{
    /// <summary>How long settling waits for the last calls: far longer than any scenario's timeouts.</summary>
    public static readonly TimeSpan DefaultBound = TimeSpan.FromSeconds(20);

    private const int MaxListed = 20;

    private readonly string _scenario;
    private readonly Func<int, int> _expected;
    private readonly ConcurrentDictionary<long, PendingCall> _pending = new();
    private readonly ConcurrentDictionary<int, Outcome>? _outcomes;
    private readonly ConcurrentDictionary<int, Exception>? _errors;
    private readonly ConcurrentQueue<string> _problems = new();
    private readonly long[] _counts = new long[6];
    private long _submitted;

    /// <param name="scenario">Named in every failure message.</param>
    /// <param name="recordOutcomes">Keep each input's outcome (inputs must then be unique) for per-input assertions.</param>
    /// <param name="expected">The correct output of an input; <see cref="FaultyHandler.Expected"/> by default.</param>
    public Ledger(string scenario, bool recordOutcomes = true, Func<int, int>? expected = null)
    {
        _scenario = scenario;
        _expected = expected ?? FaultyHandler.Expected;
        _outcomes = recordOutcomes ? new ConcurrentDictionary<int, Outcome>() : null;
        _errors = recordOutcomes ? new ConcurrentDictionary<int, Exception>() : null;
    }

    public long Submitted => Interlocked.Read(ref _submitted);

    public long Succeeded => Count(Outcome.Succeeded);

    public long Failed => Count(Outcome.Failed);

    public long Cancelled => Count(Outcome.Cancelled);

    public long Rejected => Count(Outcome.Rejected);

    public int Pending => _pending.Count;

    /// <summary>Each input's outcome (only with recordOutcomes).</summary>
    public IReadOnlyDictionary<int, Outcome> Outcomes => _outcomes ?? throw new InvalidOperationException("Outcomes are not recorded.");

    /// <summary>The exception each failed, cancelled or rejected input received (only with recordOutcomes).</summary>
    public IReadOnlyDictionary<int, Exception> Errors => _errors ?? throw new InvalidOperationException("Outcomes are not recorded.");

    /// <summary>The inputs booked with <paramref name="outcome"/> (only with recordOutcomes).</summary>
    public HashSet<int> Inputs(Outcome outcome) => Outcomes.Where(e => e.Value == outcome).Select(e => e.Key).ToHashSet();

    public long Count(Outcome outcome) => Interlocked.Read(ref _counts[(int)outcome]);

    /// <summary>The one place that maps an exception to an outcome.</summary>
    public static Outcome Classify(Exception error, CancellationToken callerToken) => error switch
    {
        BatchExecutionException or TimeoutException => Outcome.Failed,
        OperationCanceledException when callerToken.IsCancellationRequested => Outcome.Cancelled,
        BatchQueueFullException or ObjectDisposedException => Outcome.Rejected,
        _ => Outcome.Unexpected,
    };

    /// <summary>Calls <paramref name="processor"/> and books the call.</summary>
    public Task Submit(IBatchProcessor<int, int> processor, int input, CancellationToken token = default)
    {
        ValueTask<int> call;
        try
        {
            call = processor.ProcessAsync(input, token);
        }
        catch (Exception ex)
        {
            // The contract says errors come through the task; a synchronous throw still gets booked.
            call = ValueTask.FromException<int>(ex);
        }

        return Track(input, call, token);
    }

    /// <summary>Books a call already made. The returned task never faults.</summary>
    public Task Track(int input, ValueTask<int> call, CancellationToken callerToken = default)
    {
        long id = Interlocked.Increment(ref _submitted);
        _pending[id] = new PendingCall(input, Stopwatch.GetTimestamp());
        return ObserveAsync(id, input, call, callerToken);
    }

    /// <summary>The age of the oldest call still pending, or zero.</summary>
    public TimeSpan OldestPendingAge()
    {
        long oldest = long.MaxValue;
        foreach (KeyValuePair<long, PendingCall> entry in _pending)
        {
            oldest = Math.Min(oldest, entry.Value.Started);
        }

        return oldest == long.MaxValue ? TimeSpan.Zero : Stopwatch.GetElapsedTime(oldest);
    }

    /// <summary>
    /// Waits (real time) until no call is pending or <paramref name="bound"/> passes, calling
    /// <paramref name="pump"/> between polls (to advance a fake clock), and returns the books.
    /// Whatever is still pending then is a hung caller.
    /// </summary>
    public async Task<LedgerReport> SettleAsync(TimeSpan? bound = null, Action? pump = null)
    {
        var elapsed = Stopwatch.StartNew();
        TimeSpan limit = bound ?? DefaultBound;
        while (!_pending.IsEmpty && elapsed.Elapsed < limit)
        {
            pump?.Invoke();
            await Task.Delay(1).ConfigureAwait(false);
        }

        return Snapshot();
    }

    /// <summary>The books now; calls still pending count as hung.</summary>
    public LedgerReport Snapshot()
    {
        var stragglers = _pending.Values
            .OrderBy(p => p.Started)
            .Take(MaxListed)
            .Select(p => $"input {p.Input} pending for {Stopwatch.GetElapsedTime(p.Started).TotalSeconds:F1} s")
            .ToArray();
        long hung = _pending.Count;
        return new LedgerReport(_scenario, Submitted, Succeeded, Failed, Cancelled, Rejected,
            Count(Outcome.Wrong), Count(Outcome.Unexpected), hung, stragglers, _problems.Take(MaxListed).ToArray());
    }

    private async Task ObserveAsync(long id, int input, ValueTask<int> call, CancellationToken callerToken)
    {
        Outcome outcome;
        string? problem = null;
        try
        {
            int result = await call.ConfigureAwait(false);
            int expected = _expected(input);
            outcome = result == expected ? Outcome.Succeeded : Outcome.Wrong;
            if (outcome == Outcome.Wrong)
            {
                problem = $"input {input}: got {result}, expected {expected}";
            }
        }
        catch (Exception ex)
        {
            outcome = Classify(ex, callerToken);
            _errors?.TryAdd(input, ex);
            if (outcome == Outcome.Unexpected)
            {
                problem = $"input {input}: unexpected {ex.GetType().Name} (caller token cancelled: {callerToken.IsCancellationRequested}): {ex.Message}";
            }
        }

        if (problem is not null && _problems.Count < MaxListed)
        {
            _problems.Enqueue(problem);
        }

        if (_outcomes is not null && !_outcomes.TryAdd(input, outcome))
        {
            _problems.Enqueue($"input {input} was booked twice (inputs must be unique when outcomes are recorded)");
            Interlocked.Increment(ref _counts[(int)Outcome.Unexpected]);
        }

        // Count before leaving the pending set, so "nothing pending" implies final counts.
        Interlocked.Increment(ref _counts[(int)outcome]);
        _pending.TryRemove(id, out _);
    }

    private readonly record struct PendingCall(int Input, long Started);
}

/// <summary>A ledger's books at one moment.</summary>
internal sealed record LedgerReport(
    string Scenario, long Submitted, long Succeeded, long Failed, long Cancelled, long Rejected,
    long Wrong, long Unexpected, long Hung, string[] Stragglers, string[] Problems)
{
    public bool Balanced => Submitted == Succeeded + Failed + Cancelled + Rejected + Wrong + Unexpected + Hung;

    public bool Clean => Balanced && Wrong == 0 && Unexpected == 0 && Hung == 0;

    /// <summary>Throws a <see cref="LedgerException"/> naming every straggler and problem unless the books are clean.</summary>
    public LedgerReport ThrowIfUnclean()
    {
        if (!Clean)
        {
            throw new LedgerException($"{this}{Environment.NewLine}" +
                (Stragglers.Length > 0 ? $"hung callers:{Environment.NewLine}  {string.Join(Environment.NewLine + "  ", Stragglers)}{Environment.NewLine}" : "") +
                (Problems.Length > 0 ? $"problems:{Environment.NewLine}  {string.Join(Environment.NewLine + "  ", Problems)}" : ""));
        }

        return this;
    }

    public override string ToString() =>
        $"{Scenario}: submitted {Submitted} = succeeded {Succeeded} + failed {Failed} + cancelled {Cancelled} + rejected {Rejected}" +
        $" (+ wrong {Wrong} + unexpected {Unexpected} + hung {Hung}){(Balanced ? "" : " UNBALANCED")}";
}
