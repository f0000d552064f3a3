using Batching.Internal;
using Batching.Tests.TestSupport;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.Requests;

public class MultiItemTests
{
    private static int[] Expected(int[] inputs) => [.. inputs.Select(RecordingHandler.Expected)];

    /// <summary>A processor whose first batch (item -1) runs, blocked on the gate, so what is queued next stays queued.</summary>
    private static async Task<(BatchEngine<int, int> Engine, RecordingHandler Handler, TaskCompletionSource Gate, Task<int> First)> StartBlockedAsync(
        int maxBatchSize, int queueCapacity = 1000, QueueFullMode mode = QueueFullMode.Wait, int poisonIsolationDepth = 0)
    {
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        var engine = (BatchEngine<int, int>)BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = maxBatchSize,
            QueueCapacity = queueCapacity,
            QueueFullMode = mode,
            PoisonIsolationDepth = poisonIsolationDepth,
        });
        Task<int> first = engine.ProcessAsync(-1).AsTask();
        await handler.Started.WaitAsync(Wait.Bound);
        await Wait.UntilAsync(() => engine.QueuedItems == 0, "the first batch leaves the queue");
        return (engine, handler, gate, first);
    }


    [Fact]
    public async Task Every_output_lands_at_the_index_of_its_input()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 8 });
        int[] inputs = [.. Enumerable.Range(100, 40)];
        var outputs = new int[inputs.Length];

        await processor.ProcessManyAsync(inputs, outputs).AsTask().WithinBoundAsync();

        Assert.Equal(Expected(inputs), outputs);
    }

    [Fact]
    public async Task A_call_larger_than_MaxBatchSize_is_split_across_consecutive_batches_in_order()
    {
        var (engine, handler, gate, first) = await StartBlockedAsync(maxBatchSize: 4);
        await using var _ = engine;
        int[] inputs = [.. Enumerable.Range(0, 10)];
        var outputs = new int[10];

        Task call = engine.ProcessManyAsync(inputs, outputs).AsTask();
        Assert.Equal(10, engine.QueuedItems); // k items count as k
        handler.Release(gate);
        await call.WithinBoundAsync();
        await first.WithinBoundAsync();

        Assert.Equal(Expected(inputs), outputs);
        int[][] batches = [.. handler.Calls.Skip(1).Select(c => c.Inputs)];
        Assert.Equal([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], batches);
    }

    [Fact]
    public async Task Items_of_several_calls_share_batches_up_to_MaxBatchSize()
    {
        var (engine, handler, gate, first) = await StartBlockedAsync(maxBatchSize: 5);
        await using var _ = engine;
        var a = new int[3];
        var b = new int[4];
        Task callA = engine.ProcessManyAsync(new[] { 10, 11, 12 }, a).AsTask();
        Task<int> single = engine.ProcessAsync(20).AsTask();
        Task callB = engine.ProcessManyAsync(new[] { 30, 31, 32, 33 }, b).AsTask();
        Assert.Equal(8, engine.QueuedItems);

        handler.Release(gate);
        await Task.WhenAll(callA, single, callB, first).WithinBoundAsync();

        Assert.Equal([21, 23, 25], a);
        Assert.Equal(41, await single);
        Assert.Equal([61, 63, 65, 67], b);
        // FIFO, in items: the second batch takes the first call whole, the single item and the head of the last call.
        Assert.Equal([[10, 11, 12, 20, 30], [31, 32, 33]], handler.Calls.Skip(1).Select(c => c.Inputs).ToArray());
    }

    [Fact]
    public async Task A_call_larger_than_the_queue_is_admitted_in_parts_in_Wait_mode()
    {
        var (engine, handler, gate, first) = await StartBlockedAsync(maxBatchSize: 3, queueCapacity: 4);
        await using var _ = engine;
        int[] inputs = [.. Enumerable.Range(0, 11)];
        var outputs = new int[11];

        Task call = engine.ProcessManyAsync(inputs, outputs).AsTask();
        Assert.Equal(4, engine.QueuedItems);
        Assert.Equal(7, engine.WaitingForSpace);
        Task<int> behind = engine.ProcessAsync(50).AsTask(); // waits behind the rest of the call
        Assert.Equal(8, engine.WaitingForSpace);

        handler.Release(gate);
        await Task.WhenAll(call, behind, first).WithinBoundAsync();
        Assert.Equal(Expected(inputs), outputs);
        Assert.Equal([.. inputs, 50], handler.AllInputs.Skip(1));
    }

    [Fact]
    public async Task A_call_that_does_not_fit_is_rejected_whole_in_Reject_mode()
    {
        var (engine, handler, gate, first) = await StartBlockedAsync(maxBatchSize: 3, queueCapacity: 4, mode: QueueFullMode.Reject);
        await using var _ = engine;
        Task<int> queued = engine.ProcessAsync(7).AsTask();

        ValueTask tooBig = engine.ProcessManyAsync(new[] { 1, 2, 3, 4 }, new int[4]);
        ValueTask largerThanQueue = engine.ProcessManyAsync(new int[9], new int[9]);

        Assert.True(tooBig.IsFaulted);
        Assert.True(largerThanQueue.IsFaulted);
        var error = await Assert.ThrowsAsync<BatchQueueFullException>(() => tooBig.AsTask());
        Assert.Contains("4 items", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, engine.QueuedItems); // nothing of either call was queued

        var fits = new int[3];
        Task fitting = engine.ProcessManyAsync(new[] { 4, 5, 6 }, fits).AsTask();
        handler.Release(gate);
        await Task.WhenAll(queued, fitting, first).WithinBoundAsync();
        Assert.Equal([9, 11, 13], fits);
        Assert.Equal([-1, 7, 4, 5, 6], handler.AllInputs);
    }

    [Fact]
    public async Task A_failed_part_fails_the_call_with_the_failed_indexes_and_the_other_outputs_are_written()
    {
        var (engine, handler, gate, first) = await StartBlockedAsync(maxBatchSize: 4);
        await using var _ = engine;
        handler.IsPoison = x => x == 5; // fails the whole second batch (indexes 4..7)
        int[] inputs = [.. Enumerable.Range(0, 10)];
        var outputs = new int[10];

        Task call = engine.ProcessManyAsync(inputs, outputs).AsTask();
        handler.Release(gate);
        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => call.WithinBoundAsync());
        await first;

        BatchItemFailure failure = Assert.Single(error.ItemFailures);
        Assert.Equal((4, 4), (failure.StartIndex, failure.Count));
        Assert.IsType<BatchExecutionException>(failure.Error);
        Assert.Contains("poison input 5", failure.Error.Message, StringComparison.Ordinal);
        Assert.Contains("inputs[4..7]", error.Message, StringComparison.Ordinal);
        Assert.Equal([1, 3, 5, 7, 0, 0, 0, 0, 17, 19], outputs);
    }

    [Fact]
    public async Task Failures_of_parts_that_complete_out_of_order_are_reported_in_index_order()
    {
        await using var processor = BatchProcessor.Create<int, int>(async (inputs, _, _) =>
        {
            await Task.Delay(inputs.Span[0] == 0 ? 200 : 10);
            throw new InvalidOperationException("boom");
        }, new BatchingOptions { MaxBatchSize = 3, MaxConcurrentBatches = 2 });

        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => processor.ProcessManyAsync(new[] { 0, 1, 2, 3, 4, 5 }, new int[6]).AsTask().WithinBoundAsync());

        Assert.Equal([(0, 3), (3, 3)], error.ItemFailures.Select(f => (f.StartIndex, f.Count)));
    }

    [Fact]
    public async Task With_poison_isolation_only_the_poisoned_items_of_a_call_fail()
    {
        var (engine, handler, gate, first) = await StartBlockedAsync(maxBatchSize: 8, poisonIsolationDepth: 4);
        await using var _ = engine;
        handler.IsPoison = x => x is 2 or 6;
        int[] inputs = [.. Enumerable.Range(0, 8)];
        var outputs = new int[8];

        Task call = engine.ProcessManyAsync(inputs, outputs).AsTask();
        handler.Release(gate);
        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => call.WithinBoundAsync());
        await first;

        Assert.Equal([(2, 1), (6, 1)], error.ItemFailures.Select(f => (f.StartIndex, f.Count)));
        Assert.Equal([1, 3, 0, 7, 9, 11, 0, 15], outputs);
    }

    [Fact]
    public async Task Unwritten_outputs_fail_their_indexes()
    {
        await using var processor = BatchProcessor.Create<int, string>((inputs, outputs, _) =>
        {
            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = inputs.Span[i] % 3 == 0 ? null! : inputs.Span[i].ToString();
            }

            return ValueTask.CompletedTask;
        }, new BatchingOptions { MaxBatchSize = 100 });
        var outputs = new string[7];

        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => processor.ProcessManyAsync(new[] { 1, 2, 3, 4, 5, 6, 7 }, outputs).AsTask().WithinBoundAsync());

        Assert.Equal([(2, 1), (5, 1)], error.ItemFailures.Select(f => (f.StartIndex, f.Count)));
        Assert.All(error.ItemFailures, f => Assert.Contains("without writing", f.Error.Message, StringComparison.Ordinal));
        Assert.Equal(new string?[] { "1", "2", null, "4", "5", null, "7" }, outputs);
    }

    [Fact]
    public async Task Cancelling_removes_every_queued_part_and_releases_the_caller_at_once()
    {
        var (engine, handler, gate, first) = await StartBlockedAsync(maxBatchSize: 2);
        await using var _ = engine;
        using var cts = new CancellationTokenSource();
        var outputs = new int[6];
        Task call = engine.ProcessManyAsync(new[] { 1, 2, 3, 4, 5, 6 }, outputs, default, cts.Token).AsTask();
        Task<int> other = engine.ProcessAsync(9).AsTask();

        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WithinBoundAsync());
        Assert.Equal(1, engine.QueuedItems);

        handler.Release(gate);
        Assert.Equal(19, await other.WithinBoundAsync());
        await first;
        Assert.Equal([-1, 9], handler.AllInputs);
        Assert.All(outputs, o => Assert.Equal(0, o));
    }

    [Fact]
    public async Task A_call_cancelled_while_a_part_runs_is_released_at_once_and_its_buffer_is_never_written_after()
    {
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 3 });
        using var cts = new CancellationTokenSource();
        var outputs = new int[5];
        Task call = processor.ProcessManyAsync(new[] { 1, 2, 3, 4, 5 }, outputs, default, cts.Token).AsTask();
        await handler.Started.WaitAsync(Wait.Bound); // [1, 2, 3] runs; [4, 5] is queued

        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WithinBoundAsync());
        handler.Release(gate);
        Assert.Equal(3, await processor.ProcessAsync(1).WithinBoundAsync()); // the running part has finished by now
        await Wait.UntilIdleAsync(processor);

        Assert.All(outputs, o => Assert.Equal(0, o));
        Assert.DoesNotContain(4, handler.AllInputs);
    }

    [Fact]
    public async Task Mismatched_buffers_fail_that_call_only_and_queue_nothing()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler);

        ValueTask call = processor.ProcessManyAsync(new[] { 1, 2, 3 }, new int[2]);

        Assert.True(call.IsFaulted);
        var error = await Assert.ThrowsAsync<ArgumentException>(() => call.AsTask());
        Assert.Equal("outputs", error.ParamName);
        Assert.Equal(0, processor.GetLoad().QueuedItems);
        Assert.Equal(5, await processor.ProcessAsync(2).WithinBoundAsync());
        Assert.Equal([2], handler.AllInputs);
    }

    [Fact]
    public async Task An_empty_call_completes_at_once()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler);

        ValueTask call = processor.ProcessManyAsync(ReadOnlyMemory<int>.Empty, Memory<int>.Empty);

        Assert.True(call.IsCompletedSuccessfully);
        await call;
        Assert.Empty(handler.Calls);
    }

    [Fact]
    public async Task Awaiting_the_ValueTask_twice_throws_to_that_caller_only()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 4 });
        var outputs = new int[6];
        ValueTask call = processor.ProcessManyAsync(new[] { 1, 2, 3, 4, 5, 6 }, outputs);

        await call.AsTask().WithinBoundAsync();
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await call);

        var next = new int[3];
        await processor.ProcessManyAsync(new[] { 7, 8, 9 }, next).AsTask().WithinBoundAsync();
        Assert.Equal([15, 17, 19], next);
        Assert.Equal([3, 5, 7, 9, 11, 13], outputs);
    }

    [Fact]
    public async Task Disposal_drains_admitted_parts_and_fails_the_items_still_waiting_for_space()
    {
        var (engine, handler, gate, first) = await StartBlockedAsync(maxBatchSize: 2, queueCapacity: 3);
        var outputs = new int[5];
        Task call = engine.ProcessManyAsync(new[] { 1, 2, 3, 4, 5 }, outputs).AsTask();
        Assert.Equal(2, engine.WaitingForSpace);

        ValueTask disposal = engine.DisposeAsync();
        handler.Release(gate);
        await disposal.AsTask().WithinBoundAsync();

        var error = await Assert.ThrowsAsync<BatchExecutionException>(() => call.WithinBoundAsync());
        BatchItemFailure failure = Assert.Single(error.ItemFailures);
        Assert.Equal((3, 2), (failure.StartIndex, failure.Count));
        Assert.IsType<ObjectDisposedException>(failure.Error);
        Assert.Equal([3, 5, 7, 0, 0], outputs);
        await first;
    }

    [Fact]
    public async Task Parts_of_one_call_may_run_in_several_batches_at_once()
    {
        var handler = new RecordingHandler();
        var gate = handler.Hold();
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions { MaxBatchSize = 2, MaxConcurrentBatches = 3 });
        var outputs = new int[6];

        Task call = processor.ProcessManyAsync(new[] { 1, 2, 3, 4, 5, 6 }, outputs).AsTask();
        await Wait.UntilAsync(() => handler.Calls.Count == 3, "three parts run at once");
        Assert.False(call.IsCompleted);
        handler.Release(gate);
        await call.WithinBoundAsync();

        Assert.Equal([3, 5, 7, 9, 11, 13], outputs);
        Assert.Equal(3, handler.MaxConcurrentCalls);
    }

    [Fact]
    public async Task A_pooled_request_used_for_a_multi_item_call_serves_single_calls_afterwards()
    {
        var time = new FakeTimeProvider();
        var handler = new RecordingHandler(time);
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 3,
            ItemWeight = (int x) => x,
            MaxBatchWeight = 1000,
            TimeProvider = time,
        });

        for (int round = 0; round < 20; round++)
        {
            var outputs = new int[5];
            await processor.ProcessManyAsync(new[] { 1, 2, 3, 4, 5 }, outputs, new RequestOptions(0, TimeSpan.FromSeconds(1))).AsTask().WithinBoundAsync();
            Assert.Equal([3, 5, 7, 9, 11], outputs);
            Assert.Equal(2 * round + 1, await processor.ProcessAsync(round).WithinBoundAsync());
        }
    }
}
