using Batching.Tests.TestSupport;

namespace Batching.Tests.Reliability;

/// <summary>Handlers that throw, hang, slow down or leave outputs unwritten on cue: every caller is accounted for, exactly.</summary>
public class HandlerFaultTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public async Task Handler_throwing_on_every_kth_batch_fails_exactly_the_callers_of_those_batches(int maxConcurrentBatches)
    {
        var handler = new FaultyHandler { Plan = FaultyHandler.Every(5, Fault.Throw) };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 16,
            MaxDelay = TimeSpan.Zero,
            MaxConcurrentBatches = maxConcurrentBatches,
        });
        var ledger = new Ledger("throw every 5th batch");

        await Task.WhenAll(Enumerable.Range(0, 4).Select(p => Task.Run(async () =>
        {
            for (int i = 0; i < 2000; i++)
            {
                _ = ledger.Submit(processor, p * 10_000 + i);
                if (i % 64 == 0)
                {
                    await Task.Yield();
                }
            }
        })));
        LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();

        HashSet<int> thrown = Reliably.InputsOf(handler, c => c.Fault == Fault.Throw);
        Assert.True(handler.Throws > 0);
        Assert.Equal(8000, report.Submitted);
        Assert.Equal(thrown, ledger.Inputs(Outcome.Failed));
        Assert.Equal(8000 - thrown.Count, report.Succeeded);
        Assert.All(thrown, x => Assert.IsType<InjectedFaultException>(Assert.IsType<BatchExecutionException>(ledger.Errors[x]).InnerException));
        await Reliably.StillServesAsync(processor, handler);
    }

    [Fact]
    public async Task Partial_outputs_fail_only_the_callers_whose_outputs_were_left_unwritten()
    {
        var handler = new FaultyHandler { Plan = FaultyHandler.Every(3, Fault.Partial) };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 16,
            MaxDelay = TimeSpan.Zero,
            OutputCheck = OutputCheck.RejectDefault,
        });
        var ledger = new Ledger("partial outputs every 3rd batch");

        await Task.WhenAll(Enumerable.Range(0, 2).Select(p => Task.Run(() =>
        {
            for (int i = 0; i < 2000; i++)
            {
                _ = ledger.Submit(processor, p * 10_000 + i);
            }
        })));
        LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();

        // Partial calls write even indices only.
        HashSet<int> unwritten = handler.Calls.Where(c => c.Fault == Fault.Partial)
            .SelectMany(c => c.Inputs.Where((_, i) => i % 2 == 1)).ToHashSet();
        Assert.True(handler.Partials > 0);
        Assert.Equal(unwritten, ledger.Inputs(Outcome.Failed));
        Assert.Equal(4000 - unwritten.Count, report.Succeeded);
        Assert.All(unwritten, x => Assert.Contains("without writing", ledger.Errors[x].Message, StringComparison.Ordinal));
        await Reliably.StillServesAsync(processor, handler);
    }

    [Fact]
    public async Task Handler_hanging_past_the_execution_timeout_fails_only_its_callers_and_the_processor_keeps_serving()
    {
        var time = Reliably.FakeTime();
        var handler = new FaultyHandler(time) { Plan = FaultyHandler.Every(4, Fault.Hang), HangFor = TimeSpan.FromHours(1) };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 8,
            MaxDelay = TimeSpan.Zero,
            ExecutionTimeout = TimeSpan.FromSeconds(1),
            TimeProvider = time,
        });
        var ledger = new Ledger("hang every 4th batch");
        for (int i = 0; i < 400; i++)
        {
            _ = ledger.Submit(processor, i);
        }

        // One slot: while a hung call holds it nothing else runs, so advancing the clock then times out only that call.
        LedgerReport report = await ledger.SettleAsync(pump: () =>
        {
            if (handler.HangStarted.Wait(0))
            {
                time.Advance(TimeSpan.FromSeconds(1));
            }
        });
        report.ThrowIfUnclean();

        HashSet<int> hung = Reliably.InputsOf(handler, c => c.Fault == Fault.Hang);
        Assert.True(handler.Hangs >= 10, $"only {handler.Hangs} hangs");
        Assert.Equal(hung, ledger.Inputs(Outcome.Failed));
        Assert.All(hung, x => Assert.IsType<TimeoutException>(ledger.Errors[x]));
        Assert.Equal(400 - hung.Count, report.Succeeded);
        Assert.True(handler.HangsRunning > 0, "the hung calls ignore their token and are still running");

        // The hung calls return long after their callers were failed; that must not disturb anything.
        time.Advance(TimeSpan.FromHours(2));
        await Wait.UntilAsync(() => handler.HangsRunning == 0, "the hung handler calls return");
        await Reliably.StillServesAsync(processor, handler);
    }

    // Regression: the slot of a batch whose callers had all cancelled used to leak at the execution timeout.
    [Fact]
    public async Task A_hung_batch_whose_callers_all_cancelled_still_frees_its_slot_at_the_execution_timeout()
    {
        var time = Reliably.FakeTime();
        var handler = new FaultyHandler(time) { Plan = n => n == 1 ? Fault.Hang : Fault.None, HangFor = TimeSpan.FromHours(1) };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = 4,
            MaxDelay = TimeSpan.Zero,
            ExecutionTimeout = TimeSpan.FromSeconds(1),
            ShutdownTimeout = TimeSpan.Zero,
            TimeProvider = time,
        });
        var ledger = new Ledger("hung batch, callers cancelled");
        using var cts = new CancellationTokenSource();
        _ = ledger.Submit(processor, 1, cts.Token);
        Assert.True(await handler.HangStarted.WaitAsync(Wait.Bound));

        cts.Cancel(); // the only caller leaves; the handler ignores its token and keeps hanging
        await Wait.UntilAsync(() => ledger.Cancelled == 1, "the cancelled caller is released");
        time.Advance(TimeSpan.FromSeconds(1)); // the execution timeout gives up on the hung batch

        _ = ledger.Submit(processor, 2);
        LedgerReport report = (await ledger.SettleAsync(TimeSpan.FromSeconds(3))).ThrowIfUnclean();
        Assert.Equal(1, report.Succeeded);

        time.Advance(TimeSpan.FromHours(2));
        await Wait.UntilAsync(() => handler.HangsRunning == 0, "the hung handler call returns");
        await Reliably.StillServesAsync(processor, handler);
    }

    [Fact]
    public async Task Slow_then_fast_handler_builds_a_backlog_of_full_batches_and_then_drains_it()
    {
        const int Total = 3000, MaxBatch = 32, SlowCalls = 10;
        var time = Reliably.FakeTime();
        var handler = new FaultyHandler(time) { Plan = n => n <= SlowCalls ? Fault.Slow : Fault.None, SlowFor = TimeSpan.FromMilliseconds(200) };
        await using var processor = BatchProcessor.Create(handler.Handler, new BatchingOptions
        {
            MaxBatchSize = MaxBatch,
            MaxDelay = TimeSpan.Zero,
            QueueCapacity = 4096,
            TimeProvider = time,
        });
        var ledger = new Ledger("slow then fast");
        _ = ledger.Submit(processor, 0);
        Assert.True(await handler.SlowStarted.WaitAsync(Wait.Bound));
        for (int i = 1; i < Total; i++)
        {
            _ = ledger.Submit(processor, i);
        }

        // Each slow call ends when the clock moves; the fast ones need no clock at all.
        for (int slow = 1; slow <= SlowCalls; slow++)
        {
            if (slow > 1)
            {
                Assert.True(await handler.SlowStarted.WaitAsync(Wait.Bound), $"slow call {slow} did not start");
            }

            Assert.True(Reliably.QueuedItems(processor) > 0);
            time.Advance(TimeSpan.FromMilliseconds(200));
        }

        LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
        Assert.Equal(Total, report.Succeeded);
        HandlerCall[] calls = handler.Calls.OrderBy(c => c.Number).ToArray();
        Assert.Equal(1 + (Total - 1 + MaxBatch - 1) / MaxBatch, calls.Length);
        Assert.All(calls.Skip(1).SkipLast(1), c => Assert.Equal(MaxBatch, c.Inputs.Length));
        await Reliably.StillServesAsync(processor, handler);
    }
}
