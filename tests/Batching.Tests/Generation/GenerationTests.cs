using Batching.Tests.TestSupport;

namespace Batching.Tests.Generation;

public class GenerationTests
{
    private static async Task<List<int>> ReadAllAsync(IAsyncEnumerable<int> tokens, CancellationToken cancellationToken = default)
    {
        var read = new List<int>();
        await foreach (int token in tokens.WithCancellation(cancellationToken))
        {
            read.Add(token);
        }

        return read;
    }

    private static List<int> Expected(int id, int count) => [.. Enumerable.Range(0, count).Select(i => CountingModel.TokenOf(id, i))];

    [Fact]
    public async Task Each_sequence_gets_its_own_tokens_in_order_and_completes_after_the_finishing_token()
    {
        var model = new CountingModel();
        await using var processor = model.Create();
        var lengths = new[] { 1, 5, 17, 3, 40 };
        var runs = lengths.Select((length, id) => ReadAllAsync(processor.GenerateAsync((id, length)))).ToArray();
        var results = await Task.WhenAll(runs).WithinBoundAsync();
        for (int id = 0; id < lengths.Length; id++)
        {
            Assert.Equal(Expected(id, lengths[id]), results[id]);
        }
    }

    [Fact]
    public async Task MaxTokensPerSequence_ends_a_sequence_the_step_never_finishes()
    {
        var model = new CountingModel();
        await using var processor = model.Create(new GenerationOptions { MaxTokensPerSequence = 7 });
        var tokens = await ReadAllAsync(processor.GenerateAsync((1, int.MaxValue))).WithinBoundAsync();
        Assert.Equal(Expected(1, 7), tokens);
        Assert.Equal(7, model.StepsOf(1).Count);
    }

    [Fact]
    public async Task Finished_sequences_leave_at_once_and_waiting_ones_join_at_the_next_boundary()
    {
        var model = new CountingModel();
        await using var processor = model.Create(new GenerationOptions { MaxSequences = 2 });
        var runs = new[] { (0, 3), (1, 10), (2, 4) }.Select(p => ReadAllAsync(processor.GenerateAsync(p))).ToArray();
        await Task.WhenAll(runs).WithinBoundAsync();

        // Sequence 2 waits for a place, joins the step right after sequence 0's last one, and is never stepped with it
        // again; sequence 1 (still running) is in every step from its first to its last: nothing paused it.
        List<int> of0 = model.StepsOf(0), of1 = model.StepsOf(1), of2 = model.StepsOf(2);
        Assert.Equal(3, of0.Count);
        Assert.Equal(10, of1.Count);
        Assert.Equal(Enumerable.Range(of1[0], 10), of1);
        Assert.Equal(Enumerable.Range(of2[0], 4), of2);
        Assert.True(of2[0] == of0[^1] + 1, $"sequence 2 joined at step {of2[0]}, sequence 0 left after step {of0[^1]}");
        Assert.All(model.Steps.Values, ids => Assert.True(ids.Length <= 2));
    }

    [Fact]
    public async Task A_consumer_that_stops_enumerating_removes_its_sequence_before_the_next_step()
    {
        var model = new CountingModel();
        await using var processor = model.Create();
        var others = ReadAllAsync(processor.GenerateAsync((2, 200)));
        int stepsAtStop = -1;
        await foreach (int token in processor.GenerateAsync((1, 1_000_000)))
        {
            if (token == CountingModel.TokenOf(1, 4))
            {
                break; // disposes the enumerator
            }
        }

        stepsAtStop = model.StepsStarted;
        Assert.Equal(Expected(2, 200), await others.WithinBoundAsync());
        List<int> of1 = model.StepsOf(1);
        Assert.True(of1[^1] <= stepsAtStop, $"sequence 1 was stepped at {of1[^1]}, after it was abandoned during step {stepsAtStop - 1}");
        Assert.Equal(0, processor.GetLoad().ActiveSequences);
    }

    [Fact]
    public async Task Cancelling_the_token_ends_the_enumeration_with_OperationCanceledException_and_removes_the_sequence()
    {
        var model = new CountingModel();
        await using var processor = model.Create();
        using var cts = new CancellationTokenSource();
        int read = 0, stepsAtCancel = 0;
        var error = await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (int token in processor.GenerateAsync((1, 1_000_000), cts.Token))
            {
                if (++read == 3)
                {
                    cts.Cancel();
                    stepsAtCancel = model.StepsStarted;
                }
            }
        }).WithinBoundAsync();
        Assert.Equal(cts.Token, error.CancellationToken);
        await Wait.UntilAsync(() => processor.GetLoad().ActiveSequences == 0, "the sequence left");
        Assert.True(model.StepsOf(1)[^1] <= stepsAtCancel);
    }

    [Fact]
    public async Task A_slow_consumer_is_parked_at_MaxBufferedTokens_and_resumes_when_it_reads_while_others_run_on()
    {
        var model = new CountingModel();
        await using var processor = model.Create(new GenerationOptions { MaxBufferedTokens = 4 });
        await using var slow = processor.GenerateAsync((1, 50)).GetAsyncEnumerator();
        Assert.True(await slow.MoveNextAsync());
        var fast = ReadAllAsync(processor.GenerateAsync((2, 300)));
        Assert.Equal(Expected(2, 300), await fast.WithinBoundAsync());

        // One token read, four buffered: five steps carried it while the fast one ran 300.
        Assert.Equal(5, model.StepsOf(1).Count);
        Assert.Equal(1, processor.GetLoad().ParkedSequences);
        var rest = new List<int>();
        while (await slow.MoveNextAsync().AsTask().WithinBoundAsync())
        {
            rest.Add(slow.Current);
        }

        Assert.Equal(Expected(1, 50).Skip(1), rest);
        Assert.Equal(50, model.StepsOf(1).Count);
    }

    [Fact]
    public async Task A_failing_step_fails_its_sequences_after_their_delivered_tokens_and_the_processor_goes_on()
    {
        var model = new CountingModel();
        model.BeforeStep = (index, _) =>
        {
            if (index == 3)
            {
                throw new InvalidOperationException("device fault");
            }
        };
        await using var processor = model.Create();
        var tokens = new List<int>();
        var error = await Assert.ThrowsAsync<BatchExecutionException>(async () =>
        {
            await foreach (int token in processor.GenerateAsync((1, 100)))
            {
                tokens.Add(token);
            }
        }).WithinBoundAsync();
        Assert.Equal("device fault", error.InnerException!.Message);
        Assert.Equal(Expected(1, 3), tokens);
        Assert.Equal(Expected(2, 10), await ReadAllAsync(processor.GenerateAsync((2, 10))).WithinBoundAsync());
    }

    [Fact]
    public async Task A_step_that_blocks_past_StepTimeout_fails_its_sequences_and_the_next_ones_are_served()
    {
        var model = new CountingModel();
        using var release = new ManualResetEventSlim();
        model.BeforeStep = (_, ids) =>
        {
            if (ids.Contains(1))
            {
                release.Wait(Wait.Bound); // blocks its thread, ignoring the token
            }
        };
        await using var processor = model.Create(new GenerationOptions { StepTimeout = TimeSpan.FromMilliseconds(100), ShutdownTimeout = TimeSpan.Zero });
        var blocked = ReadAllAsync(processor.GenerateAsync((1, 5)));
        await Assert.ThrowsAsync<TimeoutException>(() => blocked.WithinBoundAsync());
        Assert.Equal(Expected(2, 20), await ReadAllAsync(processor.GenerateAsync((2, 20))).WithinBoundAsync());
        release.Set();
    }

    [Fact]
    public async Task A_full_queue_rejects_in_Reject_mode_and_nothing_is_queued()
    {
        var model = new CountingModel();
        using var gate = new ManualResetEventSlim();
        model.BeforeStep = (_, _) => gate.Wait(Wait.Bound);
        await using var processor = model.Create(new GenerationOptions { MaxSequences = 1, QueueCapacity = 1, QueueFullMode = QueueFullMode.Reject });
        var running = ReadAllAsync(processor.GenerateAsync((1, 2)));
        await Wait.UntilAsync(() => processor.GetLoad().ActiveSequences == 1, "the first sequence runs");
        var queued = ReadAllAsync(processor.GenerateAsync((2, 2)));
        await Wait.UntilAsync(() => processor.GetLoad().QueuedSequences == 1, "the second waits");
        await Assert.ThrowsAsync<BatchQueueFullException>(() => ReadAllAsync(processor.GenerateAsync((3, 2)))).WithinBoundAsync();
        gate.Set();
        Assert.Equal(Expected(1, 2), await running.WithinBoundAsync());
        Assert.Equal(Expected(2, 2), await queued.WithinBoundAsync());
        Assert.DoesNotContain(model.Steps.Values, ids => ids.Contains(3));
    }

    [Fact]
    public async Task Admission_weight_bounds_the_active_set_and_an_overweight_sequence_fails_alone()
    {
        var model = new CountingModel();
        await using var processor = model.Create(new GenerationOptions
        {
            SequenceWeight = (Func<CountingState, int>)(s => s.Length),
            MaxActiveWeight = 30,
        });
        var runs = Enumerable.Range(0, 8).Select(id => ReadAllAsync(processor.GenerateAsync((id, 10 + id)))).ToArray();
        await Assert.ThrowsAsync<ArgumentException>(() => ReadAllAsync(processor.GenerateAsync((99, 31)))).WithinBoundAsync();
        await Task.WhenAll(runs).WithinBoundAsync();
        foreach (int[] ids in model.Steps.Values)
        {
            Assert.True(ids.Sum(id => 10 + id) <= 30, $"step with {string.Join(",", ids)} exceeds the weight budget");
        }
    }

    [Fact]
    public async Task Priority_levels_share_admissions_by_weight_and_keep_FIFO_within_a_level()
    {
        var model = new CountingModel();
        using var gate = new ManualResetEventSlim();
        model.BeforeStep = (index, _) =>
        {
            if (index == 0)
            {
                gate.Wait(Wait.Bound);
            }
        };
        await using var processor = model.Create(new GenerationOptions { MaxSequences = 1, PriorityLevels = 2, PriorityWeights = [3, 1] });
        var first = ReadAllAsync(processor.GenerateAsync((0, 1)));
        await Wait.UntilAsync(() => model.StepsStarted == 1, "the first step runs");
        var runs = new List<Task<List<int>>> { first };
        for (int i = 1; i <= 8; i++)
        {
            runs.Add(ReadAllAsync(processor.GenerateAsync((100 + i, 1), new RequestOptions { Priority = 1 })));
            runs.Add(ReadAllAsync(processor.GenerateAsync((i, 1), new RequestOptions { Priority = 0 })));
        }

        await Wait.UntilAsync(() => processor.GetLoad().QueuedSequences == 16, "all are queued");
        gate.Set();
        await Task.WhenAll(runs).WithinBoundAsync();
        int[] order = [.. model.Steps.OrderBy(p => p.Key).Skip(1).Select(p => p.Value.Single())];
        // 3 : 1 by deficit round robin; sequence 0 already used one of level 0's first three turns.
        Assert.Equal(new[] { 1, 2, 101, 3, 4, 5, 102, 6, 7, 8, 103, 104, 105, 106, 107, 108 }, order);
    }

    [Fact]
    public async Task Disposal_finishes_active_sequences_then_fails_what_is_left_after_ShutdownTimeout()
    {
        var model = new CountingModel();
        var processor = model.Create(new GenerationOptions { MaxBufferedTokens = 1, ShutdownTimeout = TimeSpan.FromMilliseconds(200) });
        var finishing = ReadAllAsync(processor.GenerateAsync((1, 30)));
        await using var stuck = processor.GenerateAsync((2, 30)).GetAsyncEnumerator();
        Assert.True(await stuck.MoveNextAsync()); // then never reads again: parked
        await processor.DisposeAsync().AsTask().WithinBoundAsync();
        Assert.Equal(Expected(1, 30), await finishing.WithinBoundAsync());
        Assert.True(await stuck.MoveNextAsync()); // its one buffered token
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await stuck.MoveNextAsync());
        await Assert.ThrowsAsync<ObjectDisposedException>(() => ReadAllAsync(processor.GenerateAsync((3, 1))));
        Assert.False(processor.GetLoad().IsAccepting);
    }

    [Fact]
    public async Task A_sequence_enumerates_once_and_a_start_that_throws_fails_only_its_caller()
    {
        var model = new CountingModel();
        await using var processor = GenerationProcessor.Create<(int Id, int Length), CountingState, int>(
            p => p.Length < 0 ? throw new ArgumentOutOfRangeException(nameof(p), "negative length") : CountingModel.Start(p), model.Step);
        IAsyncEnumerable<int> tokens = processor.GenerateAsync((1, 2));
        Assert.Equal(Expected(1, 2), await ReadAllAsync(tokens).WithinBoundAsync());
        Assert.Throws<InvalidOperationException>(() => tokens.GetAsyncEnumerator());
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => ReadAllAsync(processor.GenerateAsync((2, -1))));
        Assert.Equal(Expected(3, 2), await ReadAllAsync(processor.GenerateAsync((3, 2))).WithinBoundAsync());
    }

    [Fact]
    public async Task Calling_MoveNextAsync_again_before_awaiting_the_previous_call_throws_to_that_caller_only()
    {
        var model = new CountingModel();
        using var gate = new ManualResetEventSlim();
        model.BeforeStep = (_, _) => gate.Wait(Wait.Bound);
        await using var processor = model.Create();
        await using var e = processor.GenerateAsync((1, 3)).GetAsyncEnumerator();
        ValueTask<bool> pending = e.MoveNextAsync();
        Assert.Throws<InvalidOperationException>(() => e.MoveNextAsync());
        gate.Set();
        Assert.True(await pending);
        Assert.Equal(CountingModel.TokenOf(1, 0), e.Current);
        Assert.Equal(Expected(2, 3), await ReadAllAsync(processor.GenerateAsync((2, 3))).WithinBoundAsync());
    }

    [Theory]
    [InlineData(nameof(GenerationOptions.MaxSequences))]
    [InlineData(nameof(GenerationOptions.QueueCapacity))]
    [InlineData(nameof(GenerationOptions.MaxTokensPerSequence))]
    [InlineData(nameof(GenerationOptions.MaxBufferedTokens))]
    [InlineData(nameof(GenerationOptions.StepTimeout))]
    [InlineData(nameof(GenerationOptions.ShutdownTimeout))]
    [InlineData(nameof(GenerationOptions.MaxActiveWeight))]
    [InlineData(nameof(GenerationOptions.SequenceWeight))]
    [InlineData(nameof(GenerationOptions.PriorityLevels))]
    [InlineData(nameof(GenerationOptions.PriorityWeights))]
    public void Invalid_options_fail_at_build_time_naming_the_setting(string setting)
    {
        var options = new GenerationOptions();
        switch (setting)
        {
            case nameof(GenerationOptions.MaxSequences): options.MaxSequences = 0; break;
            case nameof(GenerationOptions.QueueCapacity): options.QueueCapacity = -1; break;
            case nameof(GenerationOptions.MaxTokensPerSequence): options.MaxTokensPerSequence = 0; break;
            case nameof(GenerationOptions.MaxBufferedTokens): options.MaxBufferedTokens = 0; break;
            case nameof(GenerationOptions.StepTimeout): options.StepTimeout = TimeSpan.Zero; break;
            case nameof(GenerationOptions.ShutdownTimeout): options.ShutdownTimeout = TimeSpan.FromSeconds(-2); break;
            case nameof(GenerationOptions.MaxActiveWeight): options.MaxActiveWeight = 5; break;
            case nameof(GenerationOptions.SequenceWeight): options.SequenceWeight = (Func<string, int>)(s => 1); options.MaxActiveWeight = 5; break;
            case nameof(GenerationOptions.PriorityLevels): options.PriorityLevels = 17; break;
            case nameof(GenerationOptions.PriorityWeights): options.PriorityLevels = 2; options.PriorityWeights = [1]; break;
        }

        var model = new CountingModel();
        var error = Assert.ThrowsAny<ArgumentException>(() => model.Create(options));
        Assert.Equal(setting, error.ParamName);
        Assert.Contains(setting, error.Message);
    }

    [Fact]
    public void Documented_defaults_are_the_real_ones()
    {
        var options = new GenerationOptions();
        Assert.Equal(64, options.MaxSequences);
        Assert.Equal(1024, options.MaxTokensPerSequence);
        Assert.Equal(64, options.MaxBufferedTokens);
        Assert.Equal(GenerationOptions.DefaultQueueCapacity, options.QueueCapacity);
        Assert.Equal(QueueFullMode.Wait, options.QueueFullMode);
        Assert.Equal(TimeSpan.FromSeconds(30), options.StepTimeout);
        Assert.Equal(TimeSpan.FromSeconds(30), options.ShutdownTimeout);
        Assert.Null(options.SequenceWeight);
        Assert.Equal(1, options.PriorityLevels);
    }

    [Fact]
    public async Task Extreme_timeouts_work()
    {
        var model = new CountingModel();
        await using var processor = model.Create(new GenerationOptions { StepTimeout = TimeSpan.MaxValue, ShutdownTimeout = Timeout.InfiniteTimeSpan });
        Assert.Equal(Expected(1, 3), await ReadAllAsync(processor.GenerateAsync((1, 3), new RequestOptions { Timeout = TimeSpan.MaxValue })).WithinBoundAsync());
        Assert.Throws<ArgumentException>(() => processor.GenerateAsync((2, 1), new RequestOptions { Priority = 1 }));
    }
}
