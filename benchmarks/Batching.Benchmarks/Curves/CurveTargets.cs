using System.Text;

namespace Batching.Benchmarks.Curves;

/// <summary>The adaptive policy's targets from issue 3, checked on the measured curves.</summary>
internal static class CurveTargets
{
    public static string Check(SweepSettings settings, List<CurvePoint> points, List<CurvePoint> probes)
    {
        var text = new StringBuilder();
        foreach (DeviceProfile profile in settings.Profiles)
        {
            string p = profile.Name;
            double service = profile.ServiceMicroseconds(1), bound = 1.2 * service;
            if (Find(points, p, "adaptive", 10) is { } low && Find(points, p, "deadline", 10) is { } lowDeadline)
            {
                Line(text, low.P99Us <= bound,
                    $"{p} 10% load: adaptive p99 {low.P99Us:N0} us <= 1.2 x unbatched service time ({bound:N0} us)? " +
                    $"[ideal zero-overhead greedy batcher on the same arrivals: p99 {low.IdealP99Us:N0} us; deadline p99 {lowDeadline.P99Us:N0} us]");
            }

            CurvePoint? probe = probes.FirstOrDefault(x => x.Profile == p && x.Policy == "adaptive");
            CurvePoint? probeNone = probes.FirstOrDefault(x => x.Profile == p && x.Policy == "none");
            CurvePoint? probeDeadline = probes.FirstOrDefault(x => x.Profile == p && x.Policy == "deadline");
            if (probe is not null && probeNone is not null && probeDeadline is not null)
            {
                string where = $"{p} probe at 10% of the UNBATCHED capacity ({probe.OfferedPerSecond:N0}/s)";
                Line(text, probe.P99Us <= bound,
                    $"{where}: adaptive p99 {probe.P99Us:N0} us <= 1.2 x unbatched service time ({bound:N0} us)? [ideal greedy p99 {probe.IdealP99Us:N0} us]");
                Line(text, probe.P99Us <= 1.2 * probeNone.P99Us,
                    $"{where}: adaptive p99 {probe.P99Us:N0} us <= 1.2 x no-batching p99 ({1.2 * probeNone.P99Us:N0} us)? [deadline p99 {probeDeadline.P99Us:N0} us]");
            }

            foreach (double load in settings.LoadPercents.Where(l => l >= 90))
            {
                if (Find(points, p, "adaptive", load) is not { } a || Find(points, p, "deadline", load) is not { } d || Find(points, p, "size", load) is not { } s)
                {
                    continue;
                }

                CurvePoint best = s.AchievedPerSecond >= d.AchievedPerSecond ? s : d;
                Line(text, a.AchievedPerSecond >= 0.95 * best.AchievedPerSecond,
                    $"{p} {load:0}% load: adaptive throughput {a.AchievedPerSecond:N0}/s >= 95% of best fixed ({best.Policy} {best.AchievedPerSecond:N0}/s)? ({a.AchievedPerSecond / best.AchievedPerSecond:P1})");
                Line(text, a.P99Us < d.P99Us,
                    $"{p} {load:0}% load: adaptive p99 {a.P99Us:N0} us < deadline p99 {d.P99Us:N0} us?");
            }
        }

        return text.ToString();
    }

    public static CurvePoint? Find(List<CurvePoint> points, string profile, string policy, double load) =>
        points.FirstOrDefault(x => x.Profile == profile && x.Policy == policy && Math.Abs(x.LoadPercent - load) < 1e-9);

    // Program sets the invariant culture, so the interpolated numbers read the same on every machine.
    private static void Line(StringBuilder text, bool pass, string line) =>
        text.Append(pass ? "PASS " : "FAIL ").AppendLine(line);
}
