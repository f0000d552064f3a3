using System.Collections.Concurrent;
using Batching.Tests.TestSupport;

namespace Batching.Tests.Reliability;

/// <summary>
/// Handlers run in a clean ExecutionContext: no AsyncLocal value of the code that built the processor, of the
/// callers, or of an earlier handler call is visible in a handler, and a caller's own values are intact after its call.
/// </summary>
public class ExecutionContextTests
{
    private static readonly AsyncLocal<string?> Ambient = new();

    [Theory]
    [InlineData("synchronous", false, 1)]
    [InlineData("synchronous", true, 1)]
    [InlineData("synchronous", false, 2)]
    [InlineData("async", false, 1)]
    [InlineData("async", true, 2)]
    [InlineData("yielding", false, 1)]
    [InlineData("yielding", true, 2)]
    public async Task A_handler_never_sees_the_builders_the_callers_or_an_earlier_batchs_AsyncLocals(string kind, bool inlineWhenIdle, int slots)
    {
        var seen = new ConcurrentQueue<string?>();
        void Compute(ReadOnlyMemory<int> inputs, Memory<int> outputs)
        {
            seen.Enqueue(Ambient.Value);
            Ambient.Value = $"written by the handler of batch starting at {inputs.Span[0]}"; // must not survive into the next batch
            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = inputs.Span[i];
            }
        }

        // A synchronous handler writes straight into the context it is called in; an async method restores its
        // caller's context when it returns, so only the first kind could ever leak without the engine's help.
        BatchHandler<int, int> handler = kind switch
        {
            "synchronous" => (inputs, outputs, _) =>
            {
                Compute(inputs, outputs);
                return ValueTask.CompletedTask;
            },
            "async" => async (inputs, outputs, _) =>
            {
                Compute(inputs, outputs);
                await Task.CompletedTask;
            },
            _ => async (inputs, outputs, _) =>
            {
                await Task.Yield();
                Compute(inputs, outputs);
            },
        };

        Ambient.Value = "the builder's value";
        IBatchProcessor<int, int> processor = BatchProcessor.Create(handler, new BatchingOptions
        {
            MaxBatchSize = 3,
            MaxConcurrentBatches = slots,
            InlineWhenIdle = inlineWhenIdle,
        });
        Ambient.Value = null;
        await using (processor)
        {
            var leaks = new ConcurrentQueue<string>();
            await Task.WhenAll(Enumerable.Range(0, 30).Select(i => Task.Run(async () =>
            {
                for (int k = 0; k < 4; k++)
                {
                    Ambient.Value = $"caller {i}";
                    Assert.Equal(i * 100 + k, await processor.ProcessAsync(i * 100 + k));
                    if (Ambient.Value != $"caller {i}")
                    {
                        leaks.Enqueue($"caller {i} found '{Ambient.Value}' after its call");
                    }
                }
            }))).WithinBoundAsync();

            // Sequential lone calls: the idle fast path (when enabled) runs the handler on this very thread.
            for (int k = 0; k < 5; k++)
            {
                Ambient.Value = "the lone caller";
                Assert.Equal(5000 + k, await processor.ProcessAsync(5000 + k));
                Assert.Equal("the lone caller", Ambient.Value);
            }

            Assert.True(leaks.IsEmpty, string.Join("; ", leaks.Take(5)));
            Assert.All(seen, value => Assert.Null(value));
        }
    }
}
