using System.Diagnostics;
using System.Globalization;

namespace Batching.Samples.WebApi;

/// <summary>
/// <c>Inference:SlowdownFactor</c> and <c>Inference:BatchDelayMs</c>: make this instance act as a slower device, so
/// several heterogeneous instances can run on one machine (the gateway's tests and benchmark do).
/// </summary>
/// <remarks>
/// With either set, the <c>/v1/infer</c> processor's handler runs each batch on the real device processor (keyed
/// <see cref="DeviceKey"/>) and then sleeps (<see cref="Task.Delay(TimeSpan, CancellationToken)"/>, so it takes no CPU,
/// as a busy GPU would not) until the batch has taken <c>factor × (measured + BatchDelayMs)</c>. The sleep is inside the
/// batch, so the processor's slots, queue, load header and estimated wait all see the slower device. Timers round up
/// to about a millisecond, so a batch is never slowed by less than that.
/// </remarks>
internal static class SlowDevice
{
    /// <summary>The service key (and name) of the real device processor behind a slowed <c>/v1/infer</c> processor.</summary>
    public const string DeviceKey = "infer-device";

    /// <summary>The most either setting may ask for: a batch held longer than this is a misconfiguration.</summary>
    private const double MaxBatchMs = 60_000;

    public static (double Factor, TimeSpan Delay) Read(IConfiguration configuration)
    {
        IConfigurationSection section = configuration.GetSection("Inference");
        double factor = Number(section, "SlowdownFactor", 1);
        if (factor is < 1 or > 1000)
        {
            throw new ArgumentException($"Inference:SlowdownFactor must be from 1 to 1000 (1: the device's own speed); it was {Text(factor)}.");
        }

        double delayMs = Number(section, "BatchDelayMs", 0);
        if (delayMs is < 0 or > MaxBatchMs)
        {
            throw new ArgumentException($"Inference:BatchDelayMs must be from 0 to {Text(MaxBatchMs)}; it was {Text(delayMs)}.");
        }

        return (factor, TimeSpan.FromMilliseconds(delayMs));
    }

    /// <summary>The handler of the slowed processor: the batch on <paramref name="device"/>, then the rest of its time asleep.</summary>
    public static BatchHandler<ReadOnlyMemory<float>, float[]> Handler(IBatchProcessor<ReadOnlyMemory<float>, float[]> device, double factor, TimeSpan delay) =>
        async (inputs, outputs, cancellationToken) =>
        {
            long start = Stopwatch.GetTimestamp();
            await device.ProcessManyAsync(inputs, outputs, default, cancellationToken);
            TimeSpan rest = ((Stopwatch.GetElapsedTime(start) + delay) * factor) - Stopwatch.GetElapsedTime(start);
            if (rest > TimeSpan.Zero)
            {
                await Task.Delay(rest, cancellationToken);
            }
        };

    private static double Number(IConfigurationSection section, string key, double fallback)
    {
        string? text = section[key];
        if (string.IsNullOrWhiteSpace(text))
        {
            return fallback;
        }

        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && double.IsFinite(value)
            ? value
            : throw new ArgumentException($"Inference:{key} must be a number; it was '{text}'.");
    }

    private static string Text(double value) => value.ToString(CultureInfo.InvariantCulture);
}
