using System.Runtime.CompilerServices;
using Batching.Internal;
using Batching.Tests.TestSupport;

// These tests drive the awaiter protocol by hand (OnCompleted, GetResult on completed sources, ConfigureAwait(false)
// awaiters outside xunit's context); the analyzers' advice for ordinary test awaits does not apply.
#pragma warning disable xUnit1030, xUnit1031

namespace Batching.Tests.Internal;

/// <summary>The consume-once source on its own: every misuse a ValueTask allows fails the misuser and never another use.</summary>
public class ConsumeOnceValueTaskSourceTests
{
    /// <summary>A source whose uses are driven by hand: Start hands out a ValueTask, Finish completes it, Recycle resets.</summary>
    private sealed class Source : ConsumeOnceValueTaskSource<int>
    {
        public int Consumed;

        public ValueTask<int> Start() => new(this, Token);

        public void Finish(int result, bool inline = false) => Complete(result, null, inline);

        public void Fail(Exception error) => Complete(0, error, inline: false);

        public void Recycle() => Reset();

        protected override void OnConsumed() => Interlocked.Increment(ref Consumed);
    }

    private sealed class RecordingContext : SynchronizationContext
    {
        public int Posts;

        public override void Post(SendOrPostCallback d, object? state)
        {
            Interlocked.Increment(ref Posts);
            d(state);
        }
    }

    [Fact]
    public async Task An_await_receives_the_result_and_consumes_once()
    {
        var source = new Source();
        ValueTask<int> task = source.Start();
        source.Finish(7);
        Assert.Equal(7, await task);
        Assert.Equal(1, source.Consumed);
    }

    [Fact]
    public async Task A_second_await_throws_InvalidOperationException_without_consuming_again()
    {
        var source = new Source();
        ValueTask<int> task = source.Start();
        source.Finish(7);
        Assert.Equal(7, await task);
        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () => await task);
        Assert.Contains("awaited more than once", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, source.Consumed);
    }

    [Fact]
    public async Task GetResult_on_a_pending_task_throws_and_leaves_the_result_to_a_later_await()
    {
        var source = new Source();
        ValueTask<int> task = source.Start();
        var error = Assert.Throws<InvalidOperationException>(() => task.GetAwaiter().GetResult());
        Assert.Contains("before it completed", error.Message, StringComparison.Ordinal);
        Assert.Equal(0, source.Consumed);

        source.Finish(9);
        Assert.Equal(9, await task);
        Assert.Equal(1, source.Consumed);
    }

    [Fact]
    public async Task A_second_continuation_while_one_waits_fails_that_await_only()
    {
        var source = new Source();
        ValueTask<int> task = source.Start();
        Task<int> first = task.AsTask();
        Task<int> second = task.AsTask(); // never throws here: in an async method that would end the process
        await Assert.ThrowsAsync<InvalidOperationException>(() => second.WaitAsync(Wait.Bound));
        Assert.False(first.IsCompleted);
        source.Finish(3);
        Assert.Equal(3, await first.WaitAsync(Wait.Bound));
        Assert.Equal(1, source.Consumed);
    }

    [Fact]
    public async Task AsTask_after_an_await_fails_that_task_only()
    {
        var source = new Source();
        ValueTask<int> task = source.Start();
        source.Finish(4);
        Assert.Equal(4, await task);
        Task<int> late = task.AsTask();
        await Assert.ThrowsAsync<InvalidOperationException>(() => late);
        Assert.Equal(1, source.Consumed);
    }

    [Fact]
    public async Task A_stale_task_cannot_touch_the_next_use()
    {
        var source = new Source();
        ValueTask<int> stale = source.Start();
        source.Finish(1);
        Assert.Equal(1, await stale);
        source.Recycle();

        ValueTask<int> next = source.Start();
        Assert.Throws<InvalidOperationException>(() => stale.IsCompleted);
        Assert.Throws<InvalidOperationException>(() => stale.GetAwaiter().GetResult());
        using var ran = new ManualResetEventSlim();
        stale.GetAwaiter().OnCompleted(ran.Set); // resumed at once, to a GetResult that throws
        Assert.True(ran.Wait(Wait.Bound));
        Assert.Throws<InvalidOperationException>(() => stale.GetAwaiter().GetResult());
        source.Finish(2);
        Assert.Equal(2, await next);
        Assert.Equal(2, source.Consumed);
    }

    [Fact]
    public async Task Failures_and_cancellations_keep_their_status()
    {
        var source = new Source();
        ValueTask<int> failed = source.Start();
        source.Fail(new TimeoutException("late"));
        Assert.True(failed.IsFaulted);
        await Assert.ThrowsAsync<TimeoutException>(async () => await failed);
        source.Recycle();

        using var cts = new CancellationTokenSource();
        cts.Cancel();
        ValueTask<int> cancelled = source.Start();
        source.Fail(new OperationCanceledException(cts.Token));
        Assert.True(cancelled.IsCanceled);
        var error = await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await cancelled);
        Assert.Equal(cts.Token, error.CancellationToken);
    }

    [Fact]
    public void An_inline_completion_runs_the_continuation_on_the_completing_thread_and_a_queued_one_elsewhere()
    {
        var source = new Source();
        ValueTask<int> task = source.Start();
        int continuationThread = 0;
        // ConfigureAwait(false): xunit runs tests under its own SynchronizationContext, which a completion rightly honours.
        task.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(() => continuationThread = Environment.CurrentManagedThreadId);
        int completingThread = -1;
        var completer = new Thread(() =>
        {
            completingThread = Environment.CurrentManagedThreadId;
            source.Finish(5, inline: true);
        });
        completer.Start();
        completer.Join();
        Assert.Equal(completingThread, continuationThread); // ran inside Finish, before the thread ended
        Assert.Equal(5, task.GetAwaiter().GetResult());
        source.Recycle();

        // A captured SynchronizationContext is honoured even for an inline completion.
        var context = new RecordingContext();
        ValueTask<int> posted = source.Start();
        SynchronizationContext? previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(context);
        try
        {
            posted.GetAwaiter().UnsafeOnCompleted(() => { });
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        source.Finish(8, inline: true);
        Assert.Equal(1, context.Posts);
        Assert.Equal(8, posted.GetAwaiter().GetResult());
        source.Recycle();

        ValueTask<int> queued = source.Start();
        using var ran = new ManualResetEventSlim();
        int queuedThread = 0;
        queued.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(() =>
        {
            queuedThread = Environment.CurrentManagedThreadId;
            ran.Set();
        });
        source.Finish(6, inline: false);
        Assert.True(ran.Wait(Wait.Bound));
        Assert.NotEqual(Environment.CurrentManagedThreadId, queuedThread);
    }

    [Fact]
    public void Racing_stale_awaits_never_reach_a_reused_source()
    {
        // Thousands of uses; meanwhile a misbehaving thread keeps awaiting and reading the previous use's ValueTask while
        // the owner recycles and reuses the source. Every poke must be refused; none may register on, or consume, a later use.
        var source = new Source();
        var stale = new StrongBox<ValueTask<int>>[1] { new(default) };
        int refusals = 0, strayContinuations = 0;
        using var stop = new CancellationTokenSource();
        var poker = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                ValueTask<int> victim = Volatile.Read(ref stale[0]).Value;
                if (victim == default)
                {
                    continue;
                }

                // A stale continuation is resumed at once (never registered on a later use); its GetResult throws.
                var awaiter = victim.ConfigureAwait(false).GetAwaiter();
                awaiter.UnsafeOnCompleted(() =>
                {
                    try
                    {
                        _ = awaiter.GetResult();
                        Interlocked.Increment(ref strayContinuations);
                    }
                    catch (InvalidOperationException)
                    {
                        Interlocked.Increment(ref refusals);
                    }
                });

                try
                {
                    _ = victim.GetAwaiter().GetResult();
                }
                catch (InvalidOperationException)
                {
                    Interlocked.Increment(ref refusals);
                }
            }
        });
        poker.Start();

        for (int use = 0; use < 20_000; use++)
        {
            ValueTask<int> task = source.Start();
            source.Finish(use);
            Assert.Equal(use, task.GetAwaiter().GetResult());
            Volatile.Write(ref stale[0], new StrongBox<ValueTask<int>>(task));
            source.Recycle();
        }

        stop.Cancel();
        poker.Join();
        Thread.Sleep(100); // the queued stale continuations drain
        Assert.True(refusals > 0);
        Assert.Equal(0, strayContinuations);
        Assert.Equal(20_000, source.Consumed);
    }
}
