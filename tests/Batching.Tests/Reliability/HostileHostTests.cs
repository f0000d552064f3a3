using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Batching.Tests.TestSupport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;

namespace Batching.Tests.Reliability;

/// <summary>
/// What a host can do wrong around a processor, found by an adversarial review: awaiters whose contexts refuse work,
/// timers that throw, callers' contexts captured by timers, UI contexts on the idle fast path, background work of
/// handlers, instrumentation that fails at construction, and synchronous container disposal.
/// </summary>
public class HostileHostTests
{
    private static readonly AsyncLocal<object?> Probe = new();

    private static BatchHandler<int, int> Hanging() => async (_, _, ct) => await Task.Delay(Timeout.Infinite, ct);

    private static BatchingOptions FourAtOnce(TimeSpan timeout) => new()
    {
        FlushPolicy = FlushPolicy.Deadline,
        MaxBatchSize = 4,
        MaxDelay = TimeSpan.FromSeconds(10),
        ExecutionTimeout = timeout,
    };

    [Fact]
    public async Task A_caller_whose_scheduler_was_shut_down_does_not_hang_its_batch_mates()
    {
        await using var processor = BatchProcessor.Create(Hanging(), FourAtOnce(TimeSpan.FromMilliseconds(200)));
        var pair = new ConcurrentExclusiveSchedulerPair();
        Task actor = new TaskFactory(pair.ExclusiveScheduler).StartNew(async () =>
        {
            try
            {
                await processor.ProcessAsync(0);
            }
            catch (TimeoutException)
            {
            }
        }).Unwrap();
        await Task.Delay(20);
        pair.Complete(); // the actor's scheduler stops taking work while it awaits

        Task<int>[] siblings = [.. Enumerable.Range(1, 3).Select(i => processor.ProcessAsync(i).AsTask())];
        foreach (Task<int> sibling in siblings)
        {
            await Assert.ThrowsAsync<TimeoutException>(() => sibling.WaitAsync(Wait.Bound));
        }

        Assert.Equal(HealthStatus.Healthy, ((IBatchingHealthContributor)processor).CheckHealth().Status);
        await actor.WaitAsync(Wait.Bound); // resumed on the pool instead
    }

    private sealed class RefusingContext : SynchronizationContext
    {
        public override void Post(SendOrPostCallback d, object? state) => throw new InvalidOperationException("this context is gone");
    }

    [Fact]
    public async Task A_caller_whose_SynchronizationContext_refuses_Post_does_not_hang_its_batch_mates()
    {
        var handler = new RecordingHandler();
        await using var processor = BatchProcessor.Create(handler.Handler, FourAtOnce(TimeSpan.FromSeconds(30)));
        ValueTask<int> refused;
        SynchronizationContext? previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(new RefusingContext());
        try
        {
            refused = processor.ProcessAsync(0);
            refused.GetAwaiter().UnsafeOnCompleted(() => { }); // an await on that context
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }

        int[] siblings = await Task.WhenAll(Enumerable.Range(1, 3).Select(i => processor.ProcessAsync(i).AsTask())).WithinBoundAsync();
        Assert.Equal(Enumerable.Range(1, 3).Select(RecordingHandler.Expected), siblings);
        await Wait.UntilAsync(() => refused.IsCompleted, "the refused caller completes");
        Assert.Equal(1, await refused);
    }

    private sealed class BreakingTimers(bool change, bool dispose) : TimeProvider
    {
        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
            new Timer(System.CreateTimer(callback, state, dueTime, period), change, dispose);

        private sealed class Timer(ITimer inner, bool change, bool dispose) : ITimer
        {
            public bool Change(TimeSpan dueTime, TimeSpan period) => change ? throw new InvalidOperationException("Change broke") : inner.Change(dueTime, period);

            public void Dispose()
            {
                inner.Dispose();
                if (dispose)
                {
                    throw new InvalidOperationException("Dispose broke");
                }
            }

            public ValueTask DisposeAsync()
            {
                Dispose();
                return ValueTask.CompletedTask;
            }
        }
    }

    [Fact]
    public async Task A_timer_that_throws_when_armed_fails_the_caller_instead_of_stranding_it()
    {
        var processor = BatchProcessor.Create(new RecordingHandler().Handler, new BatchingOptions { TimeProvider = new BreakingTimers(change: true, dispose: false) });
        Task<int> call = processor.ProcessAsync(1).AsTask();
        try
        {
            Assert.Equal(3, await call.WaitAsync(Wait.Bound)); // it may still be served before the fault lands
        }
        catch (ObjectDisposedException error)
        {
            Assert.Contains("Change broke", error.Message, StringComparison.Ordinal);
        }

        await Wait.UntilAsync(() => ((IBatchingHealthContributor)processor).CheckHealth().Status == HealthStatus.Unhealthy, "the processor reports the broken clock");
        await Assert.ThrowsAsync<ObjectDisposedException>(() => processor.ProcessAsync(2).AsTask().WaitAsync(Wait.Bound));
        await processor.DisposeAsync().AsTask().WithinBoundAsync();
    }

    [Theory]
    [InlineData("00:00:00.2")]
    [InlineData("-00:00:00.001")]
    public async Task A_timer_that_throws_when_disposed_never_crashes_the_process_nor_DisposeAsync(string shutdownTimeout)
    {
        var processor = BatchProcessor.Create(new RecordingHandler().Handler, new BatchingOptions
        {
            TimeProvider = new BreakingTimers(change: false, dispose: true),
            ShutdownTimeout = TimeSpan.Parse(shutdownTimeout, System.Globalization.CultureInfo.InvariantCulture),
        });
        Assert.Equal(3, await processor.ProcessAsync(1).WithinBoundAsync());
        await processor.DisposeAsync().AsTask().WithinBoundAsync();
        await Task.Delay(100); // anything thrown on a pool thread would have ended the test run by now
    }

    private sealed class ProbingLoggerProvider : ILoggerProvider
    {
        public List<object?> SeenAtTimeouts { get; } = [];

        public ILogger CreateLogger(string categoryName) => new ProbingLogger(this);

        public void Dispose()
        {
        }

        private sealed class ProbingLogger(ProbingLoggerProvider owner) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (formatter(state, exception).Contains("exceeded ExecutionTimeout", StringComparison.Ordinal))
                {
                    lock (owner.SeenAtTimeouts)
                    {
                        owner.SeenAtTimeouts.Add(Probe.Value);
                    }
                }
            }
        }
    }

    [Fact]
    public async Task A_caller_on_the_idle_fast_path_leaves_nothing_of_its_context_to_later_timeouts()
    {
        var logs = new ProbingLoggerProvider();
        using var loggers = LoggerFactory.Create(b => b.AddProvider(logs));
        BatchHandler<int, int> handler = async (inputs, outputs, ct) =>
        {
            if (inputs.Span[0] == 2)
            {
                await Task.Delay(Timeout.Infinite, ct);
            }

            outputs.Span[0] = inputs.Span[0];
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions
        {
            InlineWhenIdle = true,
            MaxBatchSize = 1,
            ExecutionTimeout = TimeSpan.FromMilliseconds(200),
        }, loggers);

        WeakReference secret = await CallInlineWithASecretAsync(processor);
        await Task.Run(async () => await Assert.ThrowsAsync<TimeoutException>(() => processor.ProcessAsync(2).AsTask()));
        await Wait.UntilAsync(() => { lock (logs.SeenAtTimeouts) { return logs.SeenAtTimeouts.Count > 0; } }, "the timeout is logged");

        Assert.Equal([null], logs.SeenAtTimeouts);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.False(secret.IsAlive, "a timer kept the first caller's ExecutionContext alive");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<WeakReference> CallInlineWithASecretAsync(IBatchProcessor<int, int> processor) => await Task.Run(async () =>
    {
        var secret = new byte[1024];
        Probe.Value = secret;
        Assert.Equal(1, await processor.ProcessAsync(1)); // idle: runs on this thread, and creates the batch's timer
        Probe.Value = null;
        return new WeakReference(secret);
    });

    /// <summary>A single-threaded message loop, like a UI thread.</summary>
    private sealed class PumpContext : SynchronizationContext, IDisposable
    {
        private readonly System.Collections.Concurrent.BlockingCollection<(SendOrPostCallback, object?)> _queue = [];
        private readonly Thread _thread;

        public PumpContext()
        {
            _thread = new Thread(() =>
            {
                SetSynchronizationContext(this);
                foreach ((SendOrPostCallback callback, object? state) in _queue.GetConsumingEnumerable())
                {
                    callback(state);
                }
            }) { IsBackground = true };
            _thread.Start();
        }

        public override void Post(SendOrPostCallback d, object? state) => _queue.Add((d, state));

        public void Dispose()
        {
            _queue.CompleteAdding();
            _thread.Join();
            _queue.Dispose();
        }
    }

    [Fact]
    public async Task The_idle_fast_path_never_runs_a_handler_on_a_UI_thread()
    {
        SynchronizationContext? seenByHandler = null;
        BatchHandler<int, int> handler = async (inputs, outputs, ct) =>
        {
            seenByHandler = SynchronizationContext.Current;
            await Task.Delay(1, ct); // no ConfigureAwait(false): resumes on whatever context it started on
            outputs.Span[0] = inputs.Span[0];
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { InlineWhenIdle = true, ExecutionTimeout = TimeSpan.FromSeconds(5) });
        using var ui = new PumpContext();
        var done = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        ui.Post(_ =>
        {
            // A UI handler that blocks on the result: it deadlocked until ExecutionTimeout when the handler ran here.
            done.SetResult(processor.ProcessAsync(7).AsTask().GetAwaiter().GetResult());
        }, null);

        Assert.Equal(7, await done.Task.WaitAsync(TimeSpan.FromSeconds(3)));
        Assert.Null(seenByHandler);
    }

    [Fact]
    public async Task Background_work_of_a_handler_is_served_while_the_processor_is_busy()
    {
        IBatchProcessor<int, int>? self = null;
        var deferred = new System.Collections.Concurrent.ConcurrentQueue<Task<int>>();
        BatchHandler<int, int> handler = async (inputs, outputs, ct) =>
        {
            if (inputs.Span.IndexOf(-1) >= 0)
            {
                deferred.Enqueue(Task.Run(async () =>
                {
                    await Task.Delay(100); // well after its own batch (a few ms), while the processor's batch objects are reused
                    return await self!.ProcessAsync(-5);
                }));
            }

            await Task.Delay(1, ct);
            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = inputs.Span[i] * 2 + 1;
            }
        };
        await using var processor = BatchProcessor.Create(handler, new BatchingOptions { MaxBatchSize = 8 });
        self = processor;
        using var stop = new CancellationTokenSource(TimeSpan.FromMilliseconds(800));
        Task[] busy = [.. Enumerable.Range(0, 16).Select(c => Task.Run(async () =>
        {
            for (int k = 0; !stop.IsCancellationRequested && k < 10_000; k++)
            {
                await processor.ProcessAsync(c % 4 == 0 && k % 5 == 0 ? -1 : k);
            }
        }))];
        await Task.WhenAll(busy).WithinBoundAsync();

        Assert.NotEmpty(deferred);
        int[] results = await Task.WhenAll(deferred).WithinBoundAsync(); // none refused as a self-call
        Assert.All(results, r => Assert.Equal(-9, r));
    }

    [Fact]
    public async Task Calls_refused_before_they_are_queued_are_counted()
    {
        string name = $"early-{Guid.NewGuid():N}";
        long cancelled = 0;
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == BatchingTelemetry.MeterName && instrument.Name == "batching.requests")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            bool mine = false, isCancelled = false;
            foreach (var tag in tags)
            {
                mine |= tag.Key == BatchingTelemetry.ProcessorTag && Equals(tag.Value, name);
                isCancelled |= tag.Key == BatchingTelemetry.RequestOutcomeTag && Equals(tag.Value, "cancelled");
            }

            if (mine && isCancelled)
            {
                Interlocked.Add(ref cancelled, value);
            }
        });
        listener.Start();
        await using var processor = BatchProcessor.Create(new RecordingHandler().Handler, new BatchingOptions { Name = name });
        for (int i = 0; i < 5; i++)
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => processor.ProcessAsync(i, new CancellationToken(true)).AsTask());
        }

        Assert.Equal(5, Interlocked.Read(ref cancelled));
    }

    private sealed class ThrowingOnCreate : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => throw new InvalidOperationException("no logger for you");

        public void Dispose()
        {
        }
    }

    [Fact]
    public async Task A_processor_is_built_even_when_instrumentation_fails_while_it_is_built()
    {
        using var loggers = LoggerFactory.Create(b => b.AddProvider(new ThrowingOnCreate()));
        string name = $"built-{Guid.NewGuid():N}";
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (instrument.Meter.Tags?.Any(t => Equals(t.Value, name)) == true)
                {
                    throw new InvalidOperationException("listener refuses the instrument");
                }
            },
        };
        listener.Start();

        await using var processor = BatchProcessor.Create(new RecordingHandler().Handler, new BatchingOptions { Name = name }, loggers);
        Assert.Equal(3, await processor.ProcessAsync(1).WithinBoundAsync());
    }

    [Fact]
    public async Task A_container_disposed_synchronously_drains_its_processors()
    {
        var services = new ServiceCollection();
        services.AddBatching().AddProcessor<int, int>(new RecordingHandler().Handler, o => { o.FlushPolicy = FlushPolicy.Deadline; o.MaxDelay = TimeSpan.FromHours(1); });
        Task<int> queued;
        using (var provider = services.BuildServiceProvider())
        {
            queued = provider.GetRequiredService<IBatchProcessor<int, int>>().ProcessAsync(4).AsTask();
        }

        Assert.Equal(9, await queued.WithinBoundAsync()); // drained at disposal, without waiting for the hour
    }
}
