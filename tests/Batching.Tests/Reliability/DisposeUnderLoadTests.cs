using Batching.Tests.TestSupport;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.Reliability;

/// <summary>DisposeAsync with thousands of calls queued, waiting for space or running, and calls racing DisposeAsync.</summary>
public class DisposeUnderLoadTests
{
    [Fact]
    public async Task Dispose_with_thousands_queued_drains_them_all_through_a_failing_handler()
    {
        const int Queued = 5000;
        var time = Reliably.FakeTime();
        var handler = new FaultyHandler(time) { Plan = n => n == 1 ? Fault.Slow : n % 7 == 0 ? Fault.Throw : Fault.None, SlowFor = TimeSpan.FromSeconds(1) };
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 50,
            QueueCapacity = 10_000,
            MaxDelay = TimeSpan.FromHours(1),
            TimeProvider = time,
            FlushPolicy = FlushPolicy.Deadline,
        });
        var ledger = new Ledger("dispose with thousands queued");
        for (int i = 0; i < 50; i++)
        {
            _ = ledger.Submit(processor, i); // a full batch: dispatched at once, then slow
        }

        Assert.True(await handler.SlowStarted.WaitAsync(Ledger.DefaultBound));
        for (int i = 50; i < 50 + Queued; i++)
        {
            _ = ledger.Submit(processor, i);
        }

        Task disposing = processor.DisposeAsync().AsTask();
        time.Advance(TimeSpan.FromSeconds(1)); // the slow batch finishes well inside ShutdownTimeout
        await disposing.WaitAsync(Ledger.DefaultBound);

        LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
        HashSet<int> thrown = Reliably.InputsOf(handler, c => c.Fault == Fault.Throw);
        Assert.True(thrown.Count > 0);
        Assert.Equal(thrown, ledger.Inputs(Outcome.Failed));
        Assert.Equal(50 + Queued - thrown.Count, report.Succeeded);
        Assert.Equal(0, report.Rejected + report.Cancelled);
        await AssertRefusesAsync(processor);
    }

    [Fact]
    public async Task Dispose_with_a_hung_batch_fails_everything_left_at_the_shutdown_timeout()
    {
        const int Queued = 1000, WaitingForSpace = 2000;
        var time = Reliably.FakeTime();
        var handler = new FaultyHandler(time) { Plan = n => n == 1 ? Fault.Hang : Fault.None, HangFor = TimeSpan.FromDays(30) };
        var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 50,
            QueueCapacity = Queued,
            MaxDelay = TimeSpan.Zero,
            ExecutionTimeout = Timeout.InfiniteTimeSpan, // only shutdown can give up on the hung batch
            ShutdownTimeout = TimeSpan.FromSeconds(5),
            TimeProvider = time,
        });
        var ledger = new Ledger("dispose with a hung batch");
        _ = ledger.Submit(processor, 0);
        Assert.True(await handler.HangStarted.WaitAsync(Ledger.DefaultBound));
        for (int i = 1; i <= Queued + WaitingForSpace; i++)
        {
            _ = ledger.Submit(processor, i);
        }

        Assert.Equal(Queued, Reliably.QueuedItems(processor));
        Assert.Equal(WaitingForSpace, Reliably.WaitingForSpace(processor));
        Task disposing = processor.DisposeAsync().AsTask();

        // Callers that never got into the queue fail at once; the rest only when ShutdownTimeout runs out.
        await Wait.UntilAsync(() => ledger.Rejected == WaitingForSpace, "the callers waiting for space are refused");
        Assert.False(disposing.IsCompleted);
        Assert.Equal(Queued + 1, ledger.Pending);
        await AdvanceUntilAsync(time, disposing, TimeSpan.FromSeconds(5));

        LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
        Assert.Equal(1 + Queued + WaitingForSpace, report.Rejected);
        Assert.All(ledger.Errors.Values, e => Assert.IsType<ObjectDisposedException>(e));
        Assert.True(handler.Calls.Single().Token.IsCancellationRequested);

        time.Advance(TimeSpan.FromDays(31)); // the hung call returns after its callers were failed
        await Wait.UntilAsync(() => handler.HangsRunning == 0, "the hung handler call returns");
        await AssertRefusesAsync(processor);
    }

    [Fact]
    public async Task Calls_racing_dispose_each_end_exactly_once_and_none_hangs()
    {
        for (int round = 0; round < 20; round++)
        {
            var handler = new FaultyHandler { Plan = FaultyHandler.Random(round, pThrow: 0.1, pHang: 0, pPartial: 0.1, pSlow: 0.1), SlowFor = TimeSpan.FromMilliseconds(1) };
            var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
            {
                MaxBatchSize = 16,
                QueueCapacity = 256,
                QueueFullMode = round % 2 == 0 ? QueueFullMode.Wait : QueueFullMode.Reject,
                MaxConcurrentBatches = 1 + round % 3,
                MaxDelay = TimeSpan.FromMilliseconds(1),
                OutputCheck = OutputCheck.RejectDefault,
                ShutdownTimeout = round % 4 == 3 ? TimeSpan.Zero : TimeSpan.FromSeconds(5),
            });
            var ledger = new Ledger($"calls racing dispose, round {round}");
            var deadlines = new System.Collections.Concurrent.ConcurrentBag<CancellationTokenSource>();
            var start = new TaskCompletionSource();
            var producers = Enumerable.Range(0, 4).Select(p => Task.Run(async () =>
            {
                await start.Task;
                var random = new Random(round * 10 + p);
                for (int i = 0; i < 500; i++)
                {
                    var cts = random.Next(10) == 0 ? new CancellationTokenSource(random.Next(0, 3)) : null;
                    if (cts is not null)
                    {
                        deadlines.Add(cts);
                    }

                    _ = ledger.Submit(processor, p * 1000 + i, cts?.Token ?? default);
                }
            })).ToArray();
            var disposer = Task.Run(async () =>
            {
                await start.Task;
                await Task.Delay(round % 5);
                await processor.DisposeAsync();
            });

            start.SetResult();
            await Task.WhenAll(producers.Append(disposer)).WaitAsync(Ledger.DefaultBound);
            LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
            Assert.Equal(2000, report.Submitted);
            Assert.Subset(handler.Calls.SelectMany(c => c.Inputs).ToHashSet(), ledger.Inputs(Outcome.Succeeded));
            Assert.All(ledger.Errors.Values, e => Assert.True(e is ObjectDisposedException or BatchExecutionException or OperationCanceledException or BatchQueueFullException, e.ToString()));
            await AssertRefusesAsync(processor);
            foreach (var cts in deadlines)
            {
                cts.Dispose();
            }
        }
    }

    private static async Task AdvanceUntilAsync(FakeTimeProvider time, Task task, TimeSpan step)
    {
        for (int i = 0; i < 1000 && !task.IsCompleted; i++)
        {
            time.Advance(step);
            await Task.Delay(1);
        }

        await task.WaitAsync(Ledger.DefaultBound);
    }

    private static async Task AssertRefusesAsync(IBatchProcessor<int, int> processor)
    {
        var ledger = new Ledger("after dispose");
        _ = ledger.Submit(processor, 1);
        LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
        Assert.Equal(1, report.Rejected);
        Assert.IsType<ObjectDisposedException>(ledger.Errors[1]);
    }
}
