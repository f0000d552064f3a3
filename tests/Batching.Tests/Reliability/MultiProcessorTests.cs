using Microsoft.Extensions.DependencyInjection;

namespace Batching.Tests.Reliability;

/// <summary>Several faulty processors in one container, and a handler that calls another processor.</summary>
public class MultiProcessorTests
{
    private const int PerProcessor = 1500;

    [Fact]
    public async Task Keyed_processors_in_one_host_keep_their_faults_to_themselves()
    {
        var handlers = new Dictionary<string, FaultyHandler>
        {
            ["clean"] = new(),
            ["throws"] = new() { Plan = FaultyHandler.Every(3, Fault.Throw) },
            ["poison"] = new() { IsPoison = x => x % 100 == 42 },
            ["partial"] = new() { Plan = FaultyHandler.Every(4, Fault.Partial) },
            ["slow"] = new() { Plan = FaultyHandler.Every(2, Fault.Slow), SlowFor = TimeSpan.FromMilliseconds(2) },
            ["inner"] = new() { Plan = FaultyHandler.Every(5, Fault.Throw) },
        };
        var services = new ServiceCollection();
        IBatchingBuilder batching = services.AddBatching();
        foreach (var (name, handler) in handlers)
        {
            batching.AddKeyedProcessor<int, int>(name, handler.Handler, o =>
            {
                o.MaxBatchSize = 32;
                o.MaxConcurrentBatches = 2;
                o.OutputCheck = OutputCheck.RejectDefault;
                o.PoisonIsolationDepth = name == "poison" ? 5 : 0;
            });
        }

        batching.AddKeyedProcessor<int, int>("front", sp => ForwardingHandler.To(sp.GetRequiredKeyedService<IBatchProcessor<int, int>>("inner")), o =>
        {
            o.MaxBatchSize = 16;
            o.MaxConcurrentBatches = 2;
            o.OutputCheck = OutputCheck.RejectDefault;
        });
        await using ServiceProvider provider = services.BuildServiceProvider(validateScopes: true);
        string[] names = [.. handlers.Keys.Where(n => n != "inner"), "front"];
        var processors = names.ToDictionary(n => n, n => provider.GetRequiredKeyedService<IBatchProcessor<int, int>>(n));
        Assert.Equal(names.Length, processors.Values.Distinct().Count());

        var ledgers = names.ToDictionary(n => n, n => new Ledger($"host processor '{n}'"));
        await Task.WhenAll(names.Select(n => Task.Run(async () =>
        {
            for (int i = 0; i < PerProcessor; i++)
            {
                _ = ledgers[n].Submit(processors[n], i);
                if (i % 100 == 0)
                {
                    await Task.Yield();
                }
            }
        })));
        var reports = new Dictionary<string, LedgerReport>();
        foreach (string n in names)
        {
            reports[n] = (await ledgers[n].SettleAsync()).ThrowIfUnclean();
            Assert.Equal(PerProcessor, reports[n].Submitted);
            Assert.Equal(0, reports[n].Cancelled + reports[n].Rejected);
        }

        Assert.Equal(PerProcessor, reports["clean"].Succeeded);
        Assert.Equal(PerProcessor, reports["slow"].Succeeded);
        Assert.Equal(Reliably.InputsOf(handlers["throws"], c => c.Fault == Fault.Throw), ledgers["throws"].Inputs(Outcome.Failed));
        Assert.Equal(Enumerable.Range(0, PerProcessor).Where(x => x % 100 == 42).ToHashSet(), ledgers["poison"].Inputs(Outcome.Failed));
        Assert.Equal(handlers["partial"].Calls.Where(c => c.Fault == Fault.Partial).SelectMany(c => c.Inputs.Where((_, i) => i % 2 == 1)).ToHashSet(),
            ledgers["partial"].Inputs(Outcome.Failed));
        Assert.Equal(Reliably.InputsOf(handlers["inner"], c => c.Fault == Fault.Throw), ledgers["front"].Inputs(Outcome.Failed));
        Assert.True(reports["throws"].Failed > 0 && reports["partial"].Failed > 0 && reports["front"].Failed > 0);

        foreach (string n in names)
        {
            await Reliably.StillServesAsync(processors[n], n == "front" ? handlers["inner"] : handlers[n]);
        }

        // Disposing the host disposes every processor it built.
        await provider.DisposeAsync();
        foreach (string n in names)
        {
            await Assert.ThrowsAsync<ObjectDisposedException>(() => processors[n].ProcessAsync(1).AsTask());
        }
    }

    [Fact]
    public async Task A_handler_calling_another_processor_survives_its_faults_and_its_disposal()
    {
        var inner = new FaultyHandler { Plan = FaultyHandler.Every(4, Fault.Throw) };
        var innerProcessor = BatchProcessor.Create(inner.Handler, new BatchingOptions { MaxBatchSize = 64, MaxDelay = TimeSpan.FromMilliseconds(1) });
        await using var outer = BatchProcessor.Create(ForwardingHandler.To(innerProcessor), new BatchingOptions
        {
            MaxBatchSize = 16,
            MaxConcurrentBatches = 4,
            MaxDelay = TimeSpan.FromMilliseconds(1),
            OutputCheck = OutputCheck.RejectDefault,
        });
        var ledger = new Ledger("nested processors");
        await Task.WhenAll(Enumerable.Range(0, 2).Select(p => Task.Run(() =>
        {
            for (int i = p; i < 3000; i += 2)
            {
                _ = ledger.Submit(outer, i);
            }
        })));
        LedgerReport report = (await ledger.SettleAsync()).ThrowIfUnclean();
        HashSet<int> failedInside = Reliably.InputsOf(inner, c => c.Fault == Fault.Throw);
        Assert.True(failedInside.Count > 0);
        Assert.Equal(failedInside, ledger.Inputs(Outcome.Failed));
        Assert.Equal(3000 - failedInside.Count, report.Succeeded);
        await Reliably.StillServesAsync(outer, inner);

        // The inner processor goes away under load: outer callers fail (their outputs stay unwritten), none hangs.
        var afterwards = new Ledger("nested, inner disposed under load");
        var load = Task.Run(() =>
        {
            for (int i = 0; i < 2000; i++)
            {
                _ = afterwards.Submit(outer, 10_000 + i);
            }
        });
        await innerProcessor.DisposeAsync();
        await load;
        report = (await afterwards.SettleAsync()).ThrowIfUnclean();
        Assert.Equal(2000, report.Succeeded + report.Failed);
        Assert.Equal(0, report.Cancelled + report.Rejected);
        var late = new Ledger("nested, inner disposed");
        _ = late.Submit(outer, 1);
        Assert.Equal(1, (await late.SettleAsync()).ThrowIfUnclean().Failed);
    }
}
