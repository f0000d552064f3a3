using Batching.Internal;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.Reliability;

/// <summary>Checks shared by the reliability tests.</summary>
internal static class Reliably
{
    /// <summary>Heals <paramref name="handlers"/> and checks that fresh calls all return the right output.</summary>
    public static async Task StillServesAsync(IBatchProcessor<int, int> processor, params FaultyHandler[] handlers)
    {
        foreach (FaultyHandler handler in handlers)
        {
            handler.Heal();
        }

        // Waves smaller than any queue here, so that even a Reject-mode processor must take every call.
        const int Waves = 10, PerWave = 20;
        var ledger = new Ledger("still serves afterwards");
        for (int wave = 0; wave < Waves; wave++)
        {
            for (int i = 0; i < PerWave; i++)
            {
                _ = ledger.Submit(processor, 900_000_000 + wave * PerWave + i);
            }

            (await ledger.SettleAsync()).ThrowIfUnclean();
        }

        Assert.Equal(Waves * PerWave, ledger.Succeeded);
    }

    /// <summary>Items waiting in the queue right now (not those waiting for space).</summary>
    public static int QueuedItems(IBatchProcessor<int, int> processor) => ((BatchEngine<int, int>)processor).QueuedItems;

    /// <summary>Callers waiting for queue space right now.</summary>
    public static int WaitingForSpace(IBatchProcessor<int, int> processor) => ((BatchEngine<int, int>)processor).WaitingForSpace;

    /// <summary>A fake clock started at a fixed instant, so runs are reproducible.</summary>
    public static FakeTimeProvider FakeTime() => new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));

    /// <summary>Inputs of the recorded handler calls that match <paramref name="filter"/>, each call's first attempt only.</summary>
    public static HashSet<int> InputsOf(FaultyHandler handler, Func<HandlerCall, bool> filter) =>
        handler.Calls.Where(filter).SelectMany(c => c.Inputs).ToHashSet();
}
