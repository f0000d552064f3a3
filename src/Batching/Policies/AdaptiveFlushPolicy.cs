namespace Batching.Policies;

/// <summary>
/// Greedy at low load, model-guided under load.
/// </summary>
/// <remarks>
/// <para>The algorithm, each time a batch slot is free and items are queued:</para>
/// <list type="number">
/// <item>If no other batch is running, dispatch everything queued (up to MaxBatchSize) now. The device would
/// otherwise sit idle, and idle time never raises throughput, so there is no fixed wait at low load; under load
/// the queue grows while the running batch executes and batches grow by themselves.</item>
/// <item>Otherwise (MaxConcurrentBatches &gt; 1 and another batch is running) a new small batch competes with the
/// running one for the same resource. The policy keeps a least-squares fit of the batch cost
/// <c>t(n) = a + b·n</c> over recent batches and an exponentially smoothed arrival rate λ. If the queued
/// <c>n</c> items keep pace on their own (<c>n / t(n) ≥ λ</c>), they go now. If not, paying the fixed cost
/// <c>a</c> for so few items wastes capacity: the smallest batch that keeps pace is
/// <c>n* = λa / (1 − λb)</c>, which takes <c>(n* − n) / λ</c> to fill. The policy holds for that long only if
/// the oldest item would still finish within <see cref="AdaptiveFlushOptions.LatencyTarget"/>
/// (<c>age + fill + t(n*)</c>); otherwise it dispatches now.</item>
/// </list>
/// <para>Until <see cref="AdaptiveFlushOptions.WarmupBatches"/> batches have been seen the model is not trusted
/// and the policy never holds. The processor's MaxDelay bound applies on top of all of this.</para>
/// </remarks>
internal sealed class AdaptiveFlushPolicy : FlushPolicy
{
    // Time constant of the arrival-rate smoothing: long enough to average Poisson noise over many batches,
    // short enough to follow a load change within a fraction of a second.
    private const double RateTimeConstantSeconds = 0.05;

    private readonly AdaptiveFlushOptions _options;
    private readonly BatchCostModel _model;
    private long _lastArrivals;
    private double _lastElapsedSeconds;
    private double _arrivalsPerSecond;

    public AdaptiveFlushPolicy(AdaptiveFlushOptions options)
    {
        _options = new AdaptiveFlushOptions
        {
            LatencyTarget = options.LatencyTarget,
            ModelWindow = options.ModelWindow,
            WarmupBatches = options.WarmupBatches,
        };
        _model = new BatchCostModel(Math.Clamp(_options.ModelWindow, 4, 4096));
    }

    public override string Name => "adaptive";

    internal BatchCostModel Model => _model;

    public override FlushPolicy CreateInstance() => new AdaptiveFlushPolicy(_options);

    public override void Validate(BatchingOptions options)
    {
        BatchingOptions.Require(_options.LatencyTarget > TimeSpan.Zero, "FlushPolicy", "(Adaptive) LatencyTarget must be more than zero", _options.LatencyTarget);
        BatchingOptions.Require(_options.ModelWindow is >= 4 and <= 4096, "FlushPolicy", "(Adaptive) ModelWindow must be between 4 and 4096", _options.ModelWindow);
        BatchingOptions.Require(_options.WarmupBatches >= 2 && _options.WarmupBatches <= _options.ModelWindow, "FlushPolicy",
            $"(Adaptive) WarmupBatches must be between 2 and ModelWindow ({_options.ModelWindow})", _options.WarmupBatches);
    }

    public override void OnBatchCompleted(in BatchCompletion batch)
    {
        if (batch.Succeeded)
        {
            _model.Add(batch.BatchSize, batch.Duration);
        }
    }

    public override FlushDecision Decide(in FlushContext context)
    {
        UpdateArrivalRate(context);
        int queued = context.QueuedItems;
        int max = context.MaxBatchSize;
        double rate = _arrivalsPerSecond;
        if (queued >= max || context.InFlightBatches == 0 || _model.Count < _options.WarmupBatches || rate <= 0)
        {
            return FlushDecision.Dispatch(queued);
        }

        double a = _model.FixedSeconds, b = _model.PerItemSeconds;
        if (queued / Math.Max(_model.PredictSeconds(queued), 1e-9) >= rate)
        {
            return FlushDecision.Dispatch(queued);
        }

        double keepPace = rate * b < 1 ? Math.Ceiling(rate * a / (1 - rate * b)) : max;
        int target = (int)Math.Clamp(keepPace, queued + 1, max);
        double fillSeconds = (target - queued) / rate;
        double predicted = context.OldestItemAge.TotalSeconds + fillSeconds + _model.PredictSeconds(target);
        if (predicted > _options.LatencyTarget.TotalSeconds)
        {
            return FlushDecision.Dispatch(queued);
        }

        return FlushDecision.Wait(TimeSpan.FromSeconds(fillSeconds), target);
    }

    private void UpdateArrivalRate(in FlushContext context)
    {
        double now = context.Elapsed.TotalSeconds;
        double dt = now - _lastElapsedSeconds;
        if (dt < 100e-6)
        {
            return;
        }

        double instant = (context.TotalArrivals - _lastArrivals) / dt;
        double alpha = 1 - Math.Exp(-dt / RateTimeConstantSeconds);
        _arrivalsPerSecond = _arrivalsPerSecond == 0 ? instant : _arrivalsPerSecond + alpha * (instant - _arrivalsPerSecond);
        _lastArrivals = context.TotalArrivals;
        _lastElapsedSeconds = now;
    }
}
