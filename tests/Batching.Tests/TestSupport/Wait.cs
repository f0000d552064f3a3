using Batching.Internal;

namespace Batching.Tests.TestSupport;

internal static class Wait
{
    /// <summary>Generous bound for anything that should happen promptly; a correct engine takes microseconds.</summary>
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    public static async Task UntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Bound;
        for (int spins = 0; !condition(); spins++)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out waiting until {what}.");
            }

            // Most waits end within microseconds; yield first, sleep only if it takes longer.
            if (spins < 200)
            {
                await Task.Yield();
            }
            else
            {
                await Task.Delay(1);
            }
        }
    }

    /// <summary>Waits until the dispatcher has gone to sleep, so that "nothing was dispatched" is a real observation, not a race.</summary>
    public static Task UntilIdleAsync<TIn, TOut>(IBatchProcessor<TIn, TOut> processor) =>
        UntilAsync(() => ((BatchEngine<TIn, TOut>)processor).IsDispatcherSleeping, "the dispatcher sleeps");

    public static async Task<T> WithinBoundAsync<T>(this ValueTask<T> task) => await task.AsTask().WaitAsync(Bound);

    public static async Task<T> WithinBoundAsync<T>(this Task<T> task) => await task.WaitAsync(Bound);

    public static async Task WithinBoundAsync(this Task task) => await task.WaitAsync(Bound);
}
