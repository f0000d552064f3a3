using Batching.Tests.TestSupport;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.Requests;

public class RequestTimeoutTests
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    /// <summary>On fake time: a processor whose one slot is held by a batch (item -1) blocked on the gate.</summary>
    private static async Task<(IBatchProcessor<int, int> Processor, RecordingHandler Handler, TaskCompletionSource Gate, FakeTimeProvider Time, Task<int> First)> StartBlockedAsync(
        int maxBatchSize = 4, int queueCapacity = 100)
    {
        var time = new FakeTimeProvider();
        var handler = new RecordingHandler(time);
        var gate = handler.Hold();
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = maxBatchSize,
            QueueCapacity = queueCapacity,
            PriorityLevels = 2,
            ExecutionTimeout = TimeSpan.FromHours(1),
            TimeProvider = time,
        });
        Task<int> first = processor.ProcessAsync(-1).AsTask();
        await handler.Started.WaitAsync(Wait.Bound);
        await Wait.UntilIdleAsync(processor);
        return (processor, handler, gate, time, first);
    }


    [Fact]
    public async Task A_queued_item_expires_at_its_timeout_from_arrival_while_every_slot_is_busy_and_never_reaches_the_handler()
    {
        var (processor, handler, gate, time, first) = await StartBlockedAsync();
        await using var _ = processor;
        Task<int> expiring = processor.ProcessAsync(1, new RequestOptions(0, 10 * Ms)).AsTask();
        time.Advance(4 * Ms);
        Task<int> later = processor.ProcessAsync(2, new RequestOptions(0, 10 * Ms)).AsTask();
        Task<int> patient = processor.ProcessAsync(3).AsTask();

        time.Advance(5 * Ms);
        await Wait.UntilIdleAsync(processor);
        Assert.False(expiring.IsCompleted); // 9 ms after its arrival

        time.Advance(1 * Ms);
        var error = await Assert.ThrowsAsync<TimeoutException>(() => expiring.WithinBoundAsync());
        Assert.Contains("RequestOptions.Timeout", error.Message, StringComparison.Ordinal);
        Assert.False(later.IsCompleted); // its own clock started 4 ms later
        Assert.Equal(2, processor.GetLoad().QueuedItems);

        time.Advance(4 * Ms);
        await Assert.ThrowsAsync<TimeoutException>(() => later.WithinBoundAsync());

        handler.Release(gate);
        Assert.Equal(7, await patient.WithinBoundAsync());
        await first;
        Assert.Equal([-1, 3], handler.AllInputs);
    }

    [Fact]
    public async Task An_item_already_dispatched_finishes_normally_past_its_timeout()
    {
        var time = new FakeTimeProvider();
        var handler = new RecordingHandler(time);
        var gate = handler.Hold();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { TimeProvider = time });

        Task<int> call = processor.ProcessAsync(5, new RequestOptions(0, 2 * Ms)).AsTask();
        await handler.Started.WaitAsync(Wait.Bound);
        time.Advance(50 * Ms);
        await Wait.UntilIdleAsync(processor);
        Assert.False(call.IsCompleted);

        handler.Release(gate);
        Assert.Equal(11, await call.WithinBoundAsync());
    }

    [Fact]
    public async Task An_item_waiting_for_queue_space_expires_too_and_frees_its_place()
    {
        var (processor, handler, gate, time, first) = await StartBlockedAsync(maxBatchSize: 2, queueCapacity: 2);
        await using var _ = processor;
        Task<int>[] queued = [processor.ProcessAsync(1).AsTask(), processor.ProcessAsync(2).AsTask()];
        Task<int> waiting = processor.ProcessAsync(3, new RequestOptions(1, 3 * Ms)).AsTask();
        Task<int> behind = processor.ProcessAsync(4).AsTask();
        Assert.Equal(2, processor.GetLoad().WaitingItems);

        time.Advance(3 * Ms);
        await Assert.ThrowsAsync<TimeoutException>(() => waiting.WithinBoundAsync());
        Assert.Equal(1, processor.GetLoad().WaitingItems);

        handler.Release(gate);
        int[] results = await Task.WhenAll(queued.Append(behind)).WithinBoundAsync();
        Assert.Equal([3, 5, 9], results);
        await first;
        Assert.DoesNotContain(3, handler.AllInputs);
    }

    [Fact]
    public async Task The_undispatched_part_of_a_multi_item_call_expires_and_the_dispatched_parts_are_kept()
    {
        var time = new FakeTimeProvider();
        var handler = new RecordingHandler(time);
        var gate = handler.Hold();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 3, TimeProvider = time, ExecutionTimeout = TimeSpan.FromHours(1) });
        var outputs = new int[7];

        Task call = processor.ProcessManyAsync(new[] { 0, 1, 2, 3, 4, 5, 6 }, outputs, new RequestOptions(0, 5 * Ms)).AsTask();
        await handler.Started.WaitAsync(Wait.Bound); // [0, 1, 2] runs; [3..6] stays queued
        time.Advance(5 * Ms);
        await Wait.UntilIdleAsync(processor);
        Assert.Equal(0, processor.GetLoad().QueuedItems);
        handler.Release(gate);

        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => call.WithinBoundAsync());
        BatchItemFailure failure = Assert.Single(error.ItemFailures);
        Assert.Equal((3, 4), (failure.StartIndex, failure.Count));
        Assert.IsType<TimeoutException>(failure.Error);
        Assert.Equal([1, 3, 5, 0, 0, 0, 0], outputs);
        Assert.Equal([0, 1, 2], handler.AllInputs);
    }

    [Fact]
    public async Task A_multi_item_call_that_expires_whole_fails_with_TimeoutException()
    {
        var (processor, handler, gate, time, first) = await StartBlockedAsync();
        await using var _ = processor;
        Task call = processor.ProcessManyAsync(new[] { 1, 2, 3, 4, 5, 6 }, new int[6], new RequestOptions(1, 2 * Ms)).AsTask();

        time.Advance(2 * Ms);
        await Assert.ThrowsAsync<TimeoutException>(() => call.WithinBoundAsync());
        handler.Release(gate);
        await first;
        Assert.Equal([-1], handler.AllInputs);
    }

    [Fact]
    public async Task A_zero_timeout_fails_at_once_and_a_negative_one_is_refused()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler);

        ValueTask<int> zero = processor.ProcessAsync(1, new RequestOptions(0, TimeSpan.Zero));
        ValueTask<int> negative = processor.ProcessAsync(1, new RequestOptions(0, TimeSpan.FromSeconds(-1)));
        ValueTask negativeMany = processor.ProcessManyAsync(new[] { 1 }, new int[1], new RequestOptions(0, -2 * Ms));

        await Assert.ThrowsAsync<TimeoutException>(() => zero.AsTask());
        var error = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => negative.AsTask());
        Assert.Equal("options", error.ParamName);
        Assert.Contains("RequestOptions.Timeout", error.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => negativeMany.AsTask());
        Assert.Empty(handler.Calls);
        Assert.Equal(3, await processor.ProcessAsync(1, new RequestOptions(0, Timeout.InfiniteTimeSpan)).WithinBoundAsync());
    }

    [Fact]
    public async Task Many_expired_items_leave_nothing_behind()
    {
        var (processor, handler, gate, time, first) = await StartBlockedAsync(maxBatchSize: 8, queueCapacity: 5000);
        await using var _ = processor;
        var calls = Enumerable.Range(0, 3000).Select(i => processor.ProcessAsync(i, new RequestOptions(i % 2, (1 + i % 7) * Ms)).AsTask()).ToArray();
        Task<int> kept = processor.ProcessAsync(9999).AsTask();

        time.Advance(7 * Ms);
        foreach (Task<int> call in calls)
        {
            await Assert.ThrowsAsync<TimeoutException>(() => call.WithinBoundAsync());
        }

        Assert.Equal(1, processor.GetLoad().QueuedItems);
        handler.Release(gate);
        Assert.Equal(19999, await kept.WithinBoundAsync());
        await first;
        Assert.Equal([-1, 9999], handler.AllInputs);
    }

    [Fact]
    public async Task A_caller_resumed_inline_that_works_a_while_before_calling_again_gets_its_full_timeout()
    {
        await using var processor = BatchProcessor.Create(new RecordingHandler().Handler, new BatchingOptions { MaxBatchSize = 4 });
        for (int round = 0; round < 5; round++)
        {
            await processor.ProcessAsync(round); // resumed inline by its batch
            Thread.Sleep(30); // synchronous work past the timeout below, on the resumed thread
            Assert.Equal(3, await processor.ProcessAsync(1, new RequestOptions(0, TimeSpan.FromMilliseconds(20))).WithinBoundAsync());
        }
    }

    [Fact]
    public void RequestOptions_default_means_priority_0_and_no_timeout()
    {
        Assert.Equal(0, default(RequestOptions).Priority);
        Assert.Equal(Timeout.InfiniteTimeSpan, default(RequestOptions).Timeout);
        Assert.Equal(default, new RequestOptions { Timeout = Timeout.InfiniteTimeSpan });
        Assert.Equal(TimeSpan.Zero, new RequestOptions(1, TimeSpan.Zero).Timeout);
        Assert.NotEqual(default, new RequestOptions(0, TimeSpan.Zero));
    }
}
