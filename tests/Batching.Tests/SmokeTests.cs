namespace Batching.Tests;

public class SmokeTests
{
    [Fact]
    public async Task Concurrent_callers_get_their_own_results()
    {
        var sizes = new System.Collections.Concurrent.ConcurrentBag<int>();
        await using var p = BatchProcessor.Create<int, int>((ins, outs, ct) =>
        {
            sizes.Add(ins.Length);
            for (int i = 0; i < ins.Length; i++) outs.Span[i] = ins.Span[i] * 2 + 1;
            return ValueTask.CompletedTask;
        }, new BatchingOptions { FlushPolicy = FlushPolicy.Adaptive() });
        var tasks = Enumerable.Range(0, 10_000).Select(i => p.ProcessAsync(i).AsTask()).ToArray();
        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < results.Length; i++) Assert.Equal(i * 2 + 1, results[i]);
        Assert.All(sizes, s => Assert.InRange(s, 1, 100));
    }
}
