using Microsoft.Extensions.AI;

namespace Batching.Extensions.AI.Internal;

/// <summary>The usage one inner call reported, shared by its n values: value i gets floor((i+1)·T/n) − floor(i·T/n) of
/// each total T, so the shares of a call add up to exactly T whatever n.</summary>
internal sealed class BatchUsage(UsageDetails usage, int count)
{
    public UsageDetails Usage { get; } = usage;

    public int Count { get; } = count;

    public static long Share(long total, int position, int count) =>
        (long)((Int128)total * (position + 1) / count - (Int128)total * position / count);
}

/// <summary>One caller's usage, summed over its values. A count stays only while every inner call that carried one of
/// the caller's values reported it.</summary>
internal struct UsageAccumulator
{
    // The stable counts; the experimental ones (audio, text) are not passed on.
    private const int Fields = 5;
    private long?[]? _sums;
    private Dictionary<string, long>? _additional;
    private bool _missing;
    private bool _started;

    public void Add(BatchUsage? batch, int position)
    {
        if (batch is null)
        {
            _missing = true;
            return;
        }

        UsageDetails usage = batch.Usage;
        long?[] values = Read(usage);
        if (!_started)
        {
            _started = true;
            _sums = new long?[Fields];
            for (int f = 0; f < Fields; f++)
            {
                _sums[f] = values[f] is { } v ? BatchUsage.Share(v, position, batch.Count) : null;
            }

            if (usage.AdditionalCounts is { Count: > 0 } counts)
            {
                _additional = new Dictionary<string, long>(StringComparer.Ordinal);
                foreach (KeyValuePair<string, long> count in counts)
                {
                    _additional[count.Key] = BatchUsage.Share(count.Value, position, batch.Count);
                }
            }

            return;
        }

        for (int f = 0; f < Fields; f++)
        {
            _sums![f] = _sums[f] is { } sum && values[f] is { } v ? sum + BatchUsage.Share(v, position, batch.Count) : null;
        }

        if (_additional is not null)
        {
            foreach (string key in _additional.Keys.ToArray())
            {
                if (usage.AdditionalCounts is not null && usage.AdditionalCounts.TryGetValue(key, out long v))
                {
                    _additional[key] += BatchUsage.Share(v, position, batch.Count);
                }
                else
                {
                    _additional.Remove(key);
                }
            }
        }
    }

    public readonly UsageDetails? Result()
    {
        if (_missing || _sums is null || (_sums.All(s => s is null) && (_additional is null || _additional.Count == 0)))
        {
            return null;
        }

        var usage = new UsageDetails
        {
            InputTokenCount = _sums[0],
            OutputTokenCount = _sums[1],
            TotalTokenCount = _sums[2],
            CachedInputTokenCount = _sums[3],
            ReasoningTokenCount = _sums[4],
        };
        if (_additional is { Count: > 0 })
        {
            usage.AdditionalCounts = new AdditionalPropertiesDictionary<long>(_additional);
        }

        return usage;
    }

    private static long?[] Read(UsageDetails u) =>
        [u.InputTokenCount, u.OutputTokenCount, u.TotalTokenCount, u.CachedInputTokenCount, u.ReasoningTokenCount];
}
