namespace Batching.Policies;

/// <summary>
/// Least-squares fit of batch cost <c>t = a + b·n</c> over a sliding window of recent batches, kept as running
/// sums so each update and each prediction is O(1) and allocation-free.
/// </summary>
internal sealed class BatchCostModel
{
    private readonly double[] _sizes;
    private readonly double[] _seconds;
    private int _next;
    private int _count;
    private double _sumN, _sumT, _sumNN, _sumNT;

    public BatchCostModel(int window)
    {
        _sizes = new double[window];
        _seconds = new double[window];
    }

    public int Count => _count;

    /// <summary>Fixed cost per batch, in seconds.</summary>
    public double FixedSeconds { get; private set; }

    /// <summary>Cost per item, in seconds.</summary>
    public double PerItemSeconds { get; private set; }

    public void Add(int batchSize, TimeSpan duration)
    {
        double n = batchSize, t = duration.TotalSeconds;
        if (_count == _sizes.Length)
        {
            double oldN = _sizes[_next], oldT = _seconds[_next];
            _sumN -= oldN; _sumT -= oldT; _sumNN -= oldN * oldN; _sumNT -= oldN * oldT;
        }
        else
        {
            _count++;
        }

        _sizes[_next] = n;
        _seconds[_next] = t;
        _next = (_next + 1) % _sizes.Length;
        _sumN += n; _sumT += t; _sumNN += n * n; _sumNT += n * t;
        Refit();
    }

    public double PredictSeconds(int batchSize) => FixedSeconds + PerItemSeconds * batchSize;

    private void Refit()
    {
        double meanN = _sumN / _count, meanT = _sumT / _count;
        double varN = _sumNN / _count - meanN * meanN;
        double b;
        if (varN <= 1e-9 * Math.Max(1, meanN * meanN))
        {
            // Every batch had the same size: the split between a and b is unknown, so attribute the cost to the
            // fixed part, which makes the model favour larger batches only once it sees evidence for it.
            b = 0;
        }
        else
        {
            b = (_sumNT / _count - meanN * meanT) / varN;
        }

        // Timing noise can push the fit negative; the physical costs are not.
        b = Math.Max(0, b);
        double a = Math.Max(0, meanT - b * meanN);
        FixedSeconds = a;
        PerItemSeconds = b;
    }
}
