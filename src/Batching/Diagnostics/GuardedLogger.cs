using Microsoft.Extensions.Logging;

namespace Batching.Diagnostics;

/// <summary>
/// An <see cref="ILogger"/> that swallows what a logging provider throws: a faulty provider (a full disk, a bug in a
/// sink) must not fail a caller, kill the dispatcher or make disposal throw. The processor logs through it only.
/// </summary>
internal sealed class GuardedLogger(ILogger inner) : ILogger
{
    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull
    {
        try
        {
            return inner.BeginScope(state);
        }
        catch (Exception)
        {
            return null;
        }
    }

    public bool IsEnabled(LogLevel logLevel)
    {
        try
        {
            return inner.IsEnabled(logLevel);
        }
        catch (Exception)
        {
            return false;
        }
    }

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        try
        {
            inner.Log(logLevel, eventId, state, exception, formatter);
        }
        catch (Exception)
        {
            // Nowhere left to report it: the logger is what failed.
        }
    }
}
