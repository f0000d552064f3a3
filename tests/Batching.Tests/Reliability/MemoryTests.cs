using Batching.Tests.TestSupport;

namespace Batching.Tests.Reliability;

/// <summary>Buffers are rented to the size of the batch actually formed, not to MaxBatchSize per batch object.</summary>
[Collection(nameof(Serial))] // counts the process's allocations
public class MemoryTests
{
    [Fact]
    public async Task A_huge_MaxBatchSize_with_many_slots_allocates_in_proportion_to_the_batches_formed()
    {
        var gate = new TaskCompletionSource();
        BatchHandler<int, int> handler = async (inputs, outputs, _) =>
        {
            await gate.Task;
            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = inputs.Span[i];
            }
        };
        long before = GC.GetTotalAllocatedBytes(precise: true);
        await using (var processor = BatchProcessor.Create(handler, new BatchingOptions
        {
            MaxBatchSize = 4_000_000,
            QueueCapacity = 4_000_000,
            MaxConcurrentBatches = 64,
        }))
        {
            // 64 batch objects in use at once, each carrying a few items.
            var calls = new List<Task<int>>();
            for (int i = 0; i < 64; i++)
            {
                calls.Add(processor.ProcessAsync(i).AsTask());
                await Wait.UntilAsync(() => ((Batching.Internal.BatchEngine<int, int>)processor).InFlightBatches == Math.Min(i + 1, 64), "the batch takes its slot");
            }

            gate.SetResult();
            Assert.Equal(Enumerable.Range(0, 64), await Task.WhenAll(calls).WithinBoundAsync());
        }

        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;

        // Buffers of MaxBatchSize per batch object would be 64 x 4,000,000 x (4 + 4 + 8) bytes = 4 GB.
        Assert.True(allocated < 16 << 20, $"{allocated:N0} bytes allocated for 64 batches of one item");
    }
}
