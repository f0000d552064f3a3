using Batching.Tests.TestSupport;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests;

public class CancellationTests
{
    [Fact]
    public async Task An_item_cancelled_while_queued_never_reaches_the_handler()
    {
        var time = new FakeTimeProvider();
        var handler = new RecordingHandler(time);
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxDelay = TimeSpan.FromMilliseconds(5), TimeProvider = time, FlushPolicy = FlushPolicy.Deadline });
        using var cts = new CancellationTokenSource();
        var before = processor.ProcessAsync(1);
        var cancelled = processor.ProcessAsync(2, cts.Token);
        var after = processor.ProcessAsync(3);

        cts.Cancel();
        var error = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.AsTask().WaitAsync(Wait.Bound));
        Assert.Equal(cts.Token, error.CancellationToken);
        Assert.Empty(handler.Calls);

        time.Advance(TimeSpan.FromMilliseconds(5));
        Assert.Equal(3, await before.WithinBoundAsync());
        Assert.Equal(7, await after.WithinBoundAsync());
        Assert.Equal([1, 3], Assert.Single(handler.Calls).Inputs);
    }

    [Fact]
    public async Task An_item_cancelled_while_its_batch_runs_releases_its_caller_at_once()
    {
        var handler = new RecordingHandler();
        var gate = new TaskCompletionSource();
        handler.Gate = gate.Task;
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 2, MaxDelay = TimeSpan.FromMilliseconds(500), FlushPolicy = FlushPolicy.Deadline });
        using var cts = new CancellationTokenSource();
        var cancelled = processor.ProcessAsync(1, cts.Token);
        var kept = processor.ProcessAsync(2);
        await handler.Started.WaitAsync(Wait.Bound);

        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.AsTask().WaitAsync(Wait.Bound));
        Assert.False(kept.IsCompleted);
        Assert.False(handler.Calls.Single().Token.IsCancellationRequested);

        gate.SetResult();
        Assert.Equal(5, await kept.WithinBoundAsync());
    }

    [Fact]
    public async Task The_handler_token_is_cancelled_when_every_item_of_the_batch_is_cancelled()
    {
        var handler = new RecordingHandler();
        handler.Gate = new TaskCompletionSource().Task; // never opens: only cancellation ends the call
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 2, MaxDelay = TimeSpan.FromMilliseconds(500), FlushPolicy = FlushPolicy.Deadline });
        using var first = new CancellationTokenSource();
        using var second = new CancellationTokenSource();
        var a = processor.ProcessAsync(1, first.Token);
        var b = processor.ProcessAsync(2, second.Token);
        await handler.Started.WaitAsync(Wait.Bound);
        CancellationToken handlerToken = handler.Calls.Single().Token;

        first.Cancel();
        Assert.False(handlerToken.IsCancellationRequested);
        second.Cancel();

        await Wait.UntilAsync(() => handlerToken.IsCancellationRequested, "the handler token is cancelled");
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => a.AsTask());
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => b.AsTask());

        // The slot is free again once the cancelled handler returns.
        handler.Gate = null;
        Assert.Equal(7, await processor.ProcessAsync(3).WithinBoundAsync());
    }

    [Fact]
    public async Task An_already_cancelled_token_fails_at_once_without_queueing()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler);
        ValueTask<int> call = processor.ProcessAsync(1, new CancellationToken(canceled: true));

        Assert.True(call.IsCanceled);
        await Wait.UntilIdleAsync(processor);
        Assert.Empty(handler.Calls);
    }

    [Fact]
    public async Task Awaiting_the_same_ValueTask_twice_is_refused_without_corrupting_the_pool()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxDelay = TimeSpan.Zero });
        ValueTask<int> call = processor.ProcessAsync(4);
        Assert.Equal(9, await call.WithinBoundAsync());
        Assert.Throws<InvalidOperationException>(() => call.GetAwaiter().GetResult());

        var results = await Task.WhenAll(Enumerable.Range(0, 100).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();
        Assert.Equal(Enumerable.Range(0, 100).Select(RecordingHandler.Expected), results);
    }
}
