using System.Diagnostics;

namespace Batching.Ilgpu.Internal;

/// <summary>One row as the engine carries it: the caller's input and output buffers and the guard that says whether
/// the caller is still waiting for the output.</summary>
internal readonly struct RowCall<T>(ReadOnlyMemory<T> input, Memory<T> output, RowGuard guard, int version)
    where T : unmanaged
{
    public ReadOnlyMemory<T> Input { get; } = input;

    public Memory<T> Output { get; } = output;

    public RowGuard Guard { get; } = guard;

    public int Version { get; } = version;

    /// <summary>Copies the caller's input row into <paramref name="target"/> if the caller still waits for it.</summary>
    public bool Read(Span<T> target)
    {
        if (!Guard.TryEnter(Version))
        {
            return false;
        }

        try
        {
            Input.Span.CopyTo(target);
            return true;
        }
        finally
        {
            Guard.Exit();
        }
    }

    /// <summary>Copies <paramref name="result"/> into the caller's output buffer if the caller still waits for it.</summary>
    public bool Write(ReadOnlySpan<T> result)
    {
        if (!Guard.TryEnter(Version))
        {
            return false;
        }

        try
        {
            result.CopyTo(Output.Span);
            return true;
        }
        finally
        {
            Guard.Exit();
        }
    }
}

/// <summary>What the engine returns for a row: the result is in the caller's buffer, unless reading the input or writing
/// the output failed (a disposed native buffer, say), which fails that row's caller alone.</summary>
internal readonly struct RowWritten(Exception? error)
{
    public Exception? Error { get; } = error;
}

/// <summary>
/// Keeps a batch from writing into a caller's output buffer after the call has completed. The engine releases a
/// cancelled (or timed-out) caller while its batch may still run; without this, the batch would write into a buffer
/// the caller already reuses. One 64-bit word: version (high 32 bits), closed (bit 31), writers (low 31 bits).
/// A writer enters only while the version matches and the guard is open; the caller closes it when its call
/// completes and waits for the writers inside (one row copy) to leave, then the guard gets a new version and goes
/// back to the pool, so a stale <see cref="RowCall{T}"/> can never enter it again.
/// </summary>
internal sealed class RowGuard
{
    private const long ClosedBit = 1L << 31;
    private const long WriterMask = ClosedBit - 1;
    private long _word;

    public int Version => (int)(Volatile.Read(ref _word) >> 32);

    /// <summary>A guard for a new call, from the cache, and the version that call holds.</summary>
    public static RowGuard Rent(out int version)
    {
        RowGuard guard = CallCache<RowGuard>.Rent();
        version = guard.Version;
        return guard;
    }

    /// <summary>Closes the call's guard (see <see cref="Close"/>) and gives it back for the next call.</summary>
    public void Release(int version)
    {
        Close(version);
        CallCache<RowGuard>.Return(this);
    }

    public bool TryEnter(int version)
    {
        while (true)
        {
            long word = Volatile.Read(ref _word);
            if ((int)(word >> 32) != version || (word & ClosedBit) != 0)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _word, word + 1, word) == word)
            {
                return true;
            }
        }
    }

    public void Exit() => Interlocked.Decrement(ref _word);

    /// <summary>Called once by the call's owner when the call has completed; returns when no writer is inside.</summary>
    public void Close(int version)
    {
        long word = Interlocked.Or(ref _word, ClosedBit);
        Debug.Assert((int)(word >> 32) == version, "A guard was closed by a call that does not own it.");
        var spinner = default(SpinWait);
        while ((Volatile.Read(ref _word) & WriterMask) != 0)
        {
            spinner.SpinOnce();
        }

        Volatile.Write(ref _word, (long)(version + 1) << 32);
    }
}

/// <summary>Objects for calls to come: one cached per thread (a call usually returns its object on the thread that
/// resumes its caller, which then makes the next call), the rest in a small shared stack.</summary>
internal static class CallCache<TItem>
    where TItem : class, new()
{
    [ThreadStatic]
    private static TItem? t_cached;

    private static readonly TItem[] s_items = new TItem[256];
    private static int s_count;

    public static TItem Rent()
    {
        TItem? item = t_cached;
        if (item is not null)
        {
            t_cached = null;
            return item;
        }

        lock (s_items)
        {
            if (s_count > 0)
            {
                item = s_items[--s_count];
                s_items[s_count] = null!;
                return item;
            }
        }

        return new TItem();
    }

    public static void Return(TItem item)
    {
        if (t_cached is null)
        {
            t_cached = item;
            return;
        }

        lock (s_items)
        {
            if (s_count < s_items.Length)
            {
                s_items[s_count++] = item;
            }
        }
    }
}
