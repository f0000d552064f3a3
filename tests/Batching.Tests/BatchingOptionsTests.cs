namespace Batching.Tests;

public class BatchingOptionsTests
{
    [Fact]
    public void Defaults_are_the_documented_ones()
    {
        var options = new BatchingOptions();
        Assert.Equal(100, options.MaxBatchSize);
        Assert.Equal(TimeSpan.FromMilliseconds(1), options.MaxDelay);
        Assert.Equal(10_000, options.QueueCapacity);
        Assert.Equal(QueueFullMode.Wait, options.QueueFullMode);
        Assert.Equal(1, options.MaxConcurrentBatches);
        Assert.Equal(TimeSpan.FromSeconds(30), options.ExecutionTimeout);
        Assert.Equal(TimeSpan.FromSeconds(10), options.ShutdownTimeout);
        Assert.Equal(0, options.PoisonIsolationDepth);
        Assert.Equal(OutputCheck.RejectNull, options.OutputCheck);
        Assert.False(options.InlineWhenIdle);
        Assert.Equal("adaptive", options.FlushPolicy.Name);
        Assert.NotSame(options.FlushPolicy.CreateInstance(), options.FlushPolicy.CreateInstance());
        Assert.Null(options.TimeProvider);
        Assert.Null(options.Name);
        Assert.Equal(1, options.PriorityLevels);
        Assert.Null(options.PriorityWeights);
        Assert.Null(options.ItemWeight);
        Assert.Equal(0, options.MaxBatchWeight);
        options.Validate();
    }

    public static TheoryData<string, Action<BatchingOptions>> InvalidSettings => new()
    {
        { nameof(BatchingOptions.MaxBatchSize), o => o.MaxBatchSize = 0 },
        { nameof(BatchingOptions.PriorityLevels), o => o.PriorityLevels = 0 },
        { nameof(BatchingOptions.PriorityLevels), o => o.PriorityLevels = 17 },
        { nameof(BatchingOptions.PriorityWeights), o => { o.PriorityLevels = 3; o.PriorityWeights = [2, 1]; } },
        { nameof(BatchingOptions.PriorityWeights), o => { o.PriorityLevels = 2; o.PriorityWeights = [1, 0]; } },
        { nameof(BatchingOptions.PriorityWeights), o => { o.PriorityLevels = 2; o.PriorityWeights = [1, 1_000_001]; } },
        { nameof(BatchingOptions.MaxBatchWeight), o => o.MaxBatchWeight = 10 },
        { nameof(BatchingOptions.MaxBatchWeight), o => o.ItemWeight = (int x) => x },
        { nameof(BatchingOptions.ItemWeight), o => { o.ItemWeight = (int x) => (long)x; o.MaxBatchWeight = 5; } },
        { nameof(BatchingOptions.MaxBatchSize), o => o.MaxBatchSize = -5 },
        { nameof(BatchingOptions.MaxDelay), o => o.MaxDelay = TimeSpan.FromMilliseconds(-1) },
        { nameof(BatchingOptions.MaxDelay), o => o.MaxDelay = TimeSpan.FromHours(2) },
        { nameof(BatchingOptions.QueueCapacity), o => o.QueueCapacity = 99 },
        { nameof(BatchingOptions.QueueCapacity), o => { o.MaxBatchSize = 500; o.QueueCapacity = 400; } },
        { nameof(BatchingOptions.QueueFullMode), o => o.QueueFullMode = (QueueFullMode)7 },
        { nameof(BatchingOptions.MaxConcurrentBatches), o => o.MaxConcurrentBatches = 0 },
        { nameof(BatchingOptions.ExecutionTimeout), o => o.ExecutionTimeout = TimeSpan.Zero },
        { nameof(BatchingOptions.ExecutionTimeout), o => o.ExecutionTimeout = TimeSpan.FromSeconds(-3) },
        { nameof(BatchingOptions.ShutdownTimeout), o => o.ShutdownTimeout = TimeSpan.FromSeconds(-3) },
        { nameof(BatchingOptions.PoisonIsolationDepth), o => o.PoisonIsolationDepth = -1 },
        { nameof(BatchingOptions.PoisonIsolationDepth), o => o.PoisonIsolationDepth = 17 },
        { nameof(BatchingOptions.OutputCheck), o => o.OutputCheck = (OutputCheck)9 },
        { nameof(BatchingOptions.FlushPolicy), o => o.FlushPolicy = null! },
        { nameof(BatchingOptions.FlushPolicy), o => o.FlushPolicy = FlushPolicy.Size(32, 0) },
        { nameof(BatchingOptions.FlushPolicy), o => o.FlushPolicy = FlushPolicy.Size(101) },
        { nameof(BatchingOptions.FlushPolicy), o => o.FlushPolicy = FlushPolicy.Adaptive(new AdaptiveFlushOptions { LatencyTarget = TimeSpan.Zero }) },
        { nameof(BatchingOptions.FlushPolicy), o => o.FlushPolicy = FlushPolicy.Adaptive(new AdaptiveFlushOptions { WarmupBatches = 100 }) },
    };

    [Theory]
    [MemberData(nameof(InvalidSettings))]
    public void Bad_configuration_fails_at_build_time_naming_the_setting(string setting, Action<BatchingOptions> configure)
    {
        var options = new BatchingOptions();
        configure(options);

        var error = Assert.ThrowsAny<ArgumentException>(() => BatchProcessor.Create<int, int>((_, _, _) => default, options));

        Assert.Equal(setting, error.ParamName);
        Assert.Contains(setting, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Out_of_range_message_states_the_allowed_range_and_the_value()
    {
        var error = Assert.Throws<ArgumentException>(() => new BatchingOptions { MaxConcurrentBatches = 0 }.Validate());
        Assert.Contains("between 1 and 1024", error.Message, StringComparison.Ordinal);
        Assert.Contains("it was 0", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Null_handler_fails_at_build_time()
    {
        var error = Assert.Throws<ArgumentNullException>(() => BatchProcessor.Create<int, int>(null!));
        Assert.Equal("handler", error.ParamName);
    }

    [Fact]
    public async Task Options_are_copied_when_the_processor_is_built()
    {
        var options = new BatchingOptions { MaxBatchSize = 3, MaxDelay = TimeSpan.Zero };
        var handler = new TestSupport.RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, options);
        options.MaxBatchSize = 1000;

        await Task.WhenAll(Enumerable.Range(0, 50).Select(i => processor.ProcessAsync(i).AsTask()));

        Assert.All(handler.Calls, call => Assert.InRange(call.Inputs.Length, 1, 3));
    }
}
