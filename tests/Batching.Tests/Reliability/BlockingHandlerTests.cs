using System.Diagnostics;

namespace Batching.Tests.Reliability;

/// <summary>A handler that blocks its thread (a native call, a sync-over-async wait) and ignores its token.</summary>
public class BlockingHandlerTests
{
    // The idle fast path would run a blocking handler on the caller's thread; it is opt-in (InlineWhenIdle), and
    // by default the caller is released at ExecutionTimeout however the handler behaves.
    [Fact]
    public async Task A_handler_blocking_its_thread_does_not_hold_the_caller_inside_ProcessAsync_past_the_execution_timeout()
    {
        using var release = new ManualResetEventSlim();
        BatchHandler<int, int> handler = (inputs, outputs, token) =>
        {
            if (inputs.Span[0] == 1)
            {
                release.Wait(TimeSpan.FromSeconds(10)); // deliberately ignores the token
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = FaultyHandler.Expected(inputs.Span[i]);
            }

            return ValueTask.CompletedTask;
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions
        {
            MaxDelay = TimeSpan.Zero,
            MaxConcurrentBatches = 2,
            ExecutionTimeout = TimeSpan.FromMilliseconds(200),
        });
        var ledger = new Ledger("handler blocking its thread");
        try
        {
            await Batching.Tests.TestSupport.Wait.UntilIdleAsync(processor);
            var clock = Stopwatch.StartNew();
            Task<ValueTask<int>> calling = Task.Run(() => processor.ProcessAsync(1));
            bool returned = await Task.WhenAny(calling, Task.Delay(TimeSpan.FromSeconds(3))) == calling;
            Assert.True(returned, $"ProcessAsync itself did not return within {clock.Elapsed.TotalSeconds:F1} s: the blocking handler runs on the caller's thread");
            _ = ledger.Track(1, await calling);

            LedgerReport report = (await ledger.SettleAsync(TimeSpan.FromSeconds(3))).ThrowIfUnclean();
            Assert.Equal(1, report.Failed);
            Assert.IsType<TimeoutException>(ledger.Errors[1]);
        }
        finally
        {
            release.Set();
        }

        await Reliably.StillServesAsync(processor);
    }
}
