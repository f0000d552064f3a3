using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks.Sources;

namespace Batching.Internal;

/// <summary>
/// A reusable <see cref="IValueTaskSource{TResult}"/> whose result can be consumed exactly once per use, however the
/// <see cref="ValueTask{TResult}"/> wrapping it is misused.
/// </summary>
/// <remarks>
/// <para>The whole life of one use is one 64-bit state word: the use's version in the high half, its phase in the low
/// half (Pending, Installing a continuation, Awaiting, Completed, Consumed). Every operation a
/// <see cref="ValueTask{TResult}"/> performs (<see cref="GetStatus"/>, <see cref="OnCompleted"/>,
/// <see cref="GetResult"/>) moves or reads that word with the caller's token, so a stale token (an await after the
/// source was consumed and reused) fails the version check atomically with the transition and can never touch another
/// caller's use. <see cref="System.Threading.Tasks.Sources.ManualResetValueTaskSourceCore{TResult}"/> validates the
/// token and then sets the continuation in two steps, which a racing stale await can slip between.</para>
/// <para>Consumption is a compare-and-swap from Completed to Consumed, so a second await, <c>AsTask()</c> after an
/// await, or <c>GetAwaiter().GetResult()</c> on a pending task throws <see cref="InvalidOperationException"/> to that
/// caller without consuming anything; only the one successful consumption calls <see cref="OnConsumed"/> (which lets
/// the owner recycle the source). Model: <c>System.Threading.Channels.AsyncOperation</c>.</para>
/// <para><see cref="OnCompleted"/> itself never throws for misuse: an exception there escapes an async method's builder
/// onto the thread pool and ends the process. A continuation registered by a stale or second await is queued to run at
/// once instead, and the <see cref="GetResult"/> it then calls throws to the misuser.</para>
/// <para>The completer chooses where the continuation runs: inline on its own thread (the batch completion path,
/// which watches for continuations that block), or on the thread pool. A captured SynchronizationContext or
/// TaskScheduler is always honoured.</para>
/// </remarks>
internal abstract class ConsumeOnceValueTaskSource<T> : IValueTaskSource<T>
{
    private const long Pending = 0, Installing = 1, Awaiting = 2, Completed = 3, Consumed = 4;
    private const long PhaseMask = 0xFFFF_FFFF;

    private long _state;
    private Action<object?>? _continuation;
    private object? _continuationState;
    private ExecutionContext? _executionContext;
    private object? _scheduler;
    private T _result = default!;
    private Exception? _error;

    /// <summary>The token of the current use, for the <see cref="ValueTask{TResult}"/> handed to its caller.</summary>
    protected short Token => (short)(Volatile.Read(ref _state) >> 32);

    /// <summary>Whether the current use has a result (consumed or not).</summary>
    public bool IsCompleted => (Volatile.Read(ref _state) & PhaseMask) >= Completed;

    /// <summary>Called once per use, by the one successful <see cref="GetResult"/>, after the result was read.</summary>
    protected abstract void OnConsumed();

    /// <summary>Completes the current use. Exactly one completer per use: the owner guarantees it.</summary>
    /// <param name="result">The result, when <paramref name="error"/> is null.</param>
    /// <param name="error">The failure, or null.</param>
    /// <param name="inline">Run a waiting continuation on this thread (unless it captured a scheduling context).</param>
    protected void Complete(T result, Exception? error, bool inline)
    {
        _result = result;
        _error = error;
        var spin = new SpinWait();
        while (true)
        {
            long state = Volatile.Read(ref _state);
            long phase = state & PhaseMask;
            if (phase == Installing)
            {
                // An awaiter is between claiming the slot and publishing its continuation: a few instructions.
                spin.SpinOnce();
                continue;
            }

            Debug.Assert(phase is Pending or Awaiting, $"Completed twice (phase {phase}).");
            if (Interlocked.CompareExchange(ref _state, (state & ~PhaseMask) | Completed, state) != state)
            {
                continue;
            }

            if (phase == Awaiting)
            {
                // The owner keeps its own reference until this returns, so the source cannot be reset meanwhile.
                Invoke(_continuation!, _continuationState, _executionContext, _scheduler, inline);
            }

            return;
        }
    }

    /// <summary>Makes the source ready for its next use with a new version; only when nobody can still consume the current one.</summary>
    protected void Reset()
    {
        Debug.Assert((Volatile.Read(ref _state) & PhaseMask) is Pending or Consumed or Completed);
        _continuation = null;
        _continuationState = null;
        _executionContext = null;
        _scheduler = null;
        _result = default!;
        _error = null;
        long version = (Volatile.Read(ref _state) >> 32) + 1;
        Volatile.Write(ref _state, (version & PhaseMask) << 32);
    }

    public ValueTaskSourceStatus GetStatus(short token)
    {
        long state = Volatile.Read(ref _state);
        Validate(state, token);
        if ((state & PhaseMask) < Completed)
        {
            return ValueTaskSourceStatus.Pending;
        }

        return _error switch
        {
            null => ValueTaskSourceStatus.Succeeded,
            OperationCanceledException => ValueTaskSourceStatus.Canceled,
            _ => ValueTaskSourceStatus.Faulted,
        };
    }

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        while (true)
        {
            long current = Volatile.Read(ref _state);
            if ((short)(current >> 32) != token)
            {
                // A stale ValueTask. Throwing here would not reach the misuser: an async method's builder rethrows what
                // OnCompleted throws on the thread pool, which ends the process. Resume it instead; its GetResult throws.
                InvokeLater(continuation, state, flags);
                return;
            }

            switch (current & PhaseMask)
            {
                case Pending:
                    if (Interlocked.CompareExchange(ref _state, (current & ~PhaseMask) | Installing, current) != current)
                    {
                        continue;
                    }

                    _continuation = continuation;
                    _continuationState = state;
                    (_executionContext, _scheduler) = CaptureContexts(flags);
                    Volatile.Write(ref _state, (current & ~PhaseMask) | Awaiting);
                    return;
                case Completed:
                    // It completed between the awaiter's IsCompleted check and now: continue asynchronously, never on
                    // the caller's stack.
                    InvokeLater(continuation, state, flags);
                    return;
                default:
                    // A second await (concurrent, or after the result was consumed): as above, never throw from here.
                    InvokeLater(continuation, state, flags);
                    return;
            }
        }
    }

    public T GetResult(short token)
    {
        long state = Volatile.Read(ref _state);
        Validate(state, token);
        if ((state & PhaseMask) != Completed || Interlocked.CompareExchange(ref _state, (state & ~PhaseMask) | Consumed, state) != state)
        {
            state = Volatile.Read(ref _state);
            Validate(state, token);
            throw (state & PhaseMask) < Completed
                ? Misuse("was read before it completed (GetAwaiter().GetResult() or .Result on a pending ValueTask); await it, or call AsTask() once and use the Task")
                : Misuse("was awaited more than once");
        }

        T result = _result;
        Exception? error = _error;
        OnConsumed();
        if (error is not null)
        {
            ExceptionDispatchInfo.Throw(error);
        }

        return result;
    }

    /// <summary>Hands the continuation to the awaiter's captured context. A context that refuses (a completed
    /// <see cref="ConcurrentExclusiveSchedulerPair"/>, a SynchronizationContext whose Post throws) must not leave the
    /// caller hanging, nor throw into whoever completes it (a batch resuming its other callers, a timeout under the
    /// processor's lock): the continuation then runs on the thread pool instead.</summary>
    private static bool TrySchedule(Action<object?> continuation, object? state, object scheduler)
    {
        try
        {
            if (scheduler is SynchronizationContext synchronizationContext)
            {
                synchronizationContext.Post(static s =>
                {
                    var (c, st) = ((Action<object?>, object?))s!;
                    c(st);
                }, (continuation, state));
            }
            else
            {
                Task.Factory.StartNew(continuation, state, CancellationToken.None, TaskCreationOptions.DenyChildAttach, (TaskScheduler)scheduler);
            }

            return true;
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <summary>Runs a continuation asynchronously, in the contexts its flags ask for.</summary>
    private static void InvokeLater(Action<object?> continuation, object? state, ValueTaskSourceOnCompletedFlags flags)
    {
        (ExecutionContext? context, object? scheduler) = CaptureContexts(flags);
        Invoke(continuation, state, context, scheduler, inline: false);
    }

    private static (ExecutionContext? Context, object? Scheduler) CaptureContexts(ValueTaskSourceOnCompletedFlags flags) =>
        ((flags & ValueTaskSourceOnCompletedFlags.FlowExecutionContext) != 0 ? ExecutionContext.Capture() : null,
         (flags & ValueTaskSourceOnCompletedFlags.UseSchedulingContext) != 0 ? CaptureScheduler() : null);

    private static void Validate(long state, short token)
    {
        if ((short)(state >> 32) != token)
        {
            throw Misuse("was used after it had been awaited (its operation has been recycled)");
        }
    }

    private static InvalidOperationException Misuse(string what) =>
        new($"A ValueTask returned by ProcessAsync {what}. Await each ValueTask exactly once, or call AsTask() once and use the Task as often as needed.");

    private static object? CaptureScheduler()
    {
        SynchronizationContext? context = SynchronizationContext.Current;
        if (context is not null && context.GetType() != typeof(SynchronizationContext))
        {
            return context;
        }

        TaskScheduler scheduler = TaskScheduler.Current;
        return scheduler == TaskScheduler.Default ? null : scheduler;
    }

    private static void Invoke(Action<object?> continuation, object? state, ExecutionContext? context, object? scheduler, bool inline)
    {
        if (scheduler is not null && TrySchedule(continuation, state, scheduler))
        {
            return;
        }

        if (context is not null)
        {
            // Only for OnCompleted with FlowExecutionContext (await uses UnsafeOnCompleted): rare, so it may allocate.
            ThreadPool.UnsafeQueueUserWorkItem(static s =>
            {
                var (c, st, ctx) = ((Action<object?>, object?, ExecutionContext))s!;
                ExecutionContext.Run(ctx, static x => { var (c2, st2) = ((Action<object?>, object?))x!; c2(st2); }, (c, st));
            }, (continuation, state, context), preferLocal: false);
            return;
        }

        if (inline)
        {
            continuation(state);
        }
        else
        {
            ThreadPool.UnsafeQueueUserWorkItem(continuation, state, preferLocal: false);
        }
    }
}
