using System.Collections.Concurrent;
using System.Diagnostics;
using Batching.Tests.TestSupport;

namespace Batching.Tests.Diagnostics;

/// <summary>
/// Batch activities are roots linked to their callers' activities: never children of the previous batch, nor of
/// whatever was current when the processor was built; and a caller's <see cref="Activity.Current"/> is unchanged by a
/// call, on the idle fast path too.
/// </summary>
[Collection(nameof(TelemetryTests))] // listeners are process-wide
public class TracingTests
{
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public async Task Batch_activities_are_roots_linked_to_their_callers_and_callers_keep_their_current_activity(bool inlineWhenIdle, bool asyncHandler)
    {
        var stopped = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name is BatchingTelemetry.ActivitySourceName or "Tests",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = stopped.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);
        using var tests = new ActivitySource("Tests");
        string name = $"roots-{Guid.NewGuid():N}";
        var handlerSaw = new ConcurrentQueue<(string? Current, string? Parent)>();
        BatchHandler<int, int> handler = async (inputs, outputs, _) =>
        {
            handlerSaw.Enqueue((Activity.Current?.OperationName, Activity.Current?.Parent?.OperationName));
            if (asyncHandler)
            {
                await Task.Yield();
            }

            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = inputs.Span[i] + 1;
            }
        };

        IBatchProcessor<int, int> processor;
        using (tests.StartActivity("host start-up"))
        {
            // Whatever is current while the processor is built must never become its batches' parent.
            processor = BatchProcessor.Create(handler, new BatchingOptions { Name = name, MaxBatchSize = 4, InlineWhenIdle = inlineWhenIdle });
        }

        await using (processor)
        {
            var callers = new ConcurrentBag<ActivityContext>();
            var mismatches = new ConcurrentQueue<string>();
            await Task.WhenAll(Enumerable.Range(0, 40).Select(i => Task.Run(async () =>
            {
                for (int k = 0; k < 5; k++)
                {
                    using Activity request = tests.StartActivity($"request {i}.{k}")!;
                    callers.Add(request.Context);
                    int result = await processor.ProcessAsync(i * 10 + k);
                    if (Activity.Current != request)
                    {
                        mismatches.Enqueue($"after the call, Activity.Current was {Activity.Current?.OperationName ?? "null"} instead of {request.OperationName}");
                    }

                    Assert.Equal(i * 10 + k + 1, result);
                }
            }))).WithinBoundAsync();

            // A lone call with nothing else running: the idle fast path when enabled.
            using (Activity lone = tests.StartActivity("lone request")!)
            {
                callers.Add(lone.Context);
                ValueTask<int> call = processor.ProcessAsync(1000);
                Assert.Same(lone, Activity.Current);
                Assert.Equal(1001, await call);
                Assert.Same(lone, Activity.Current);
            }

            Assert.Null(Activity.Current);
            Assert.True(mismatches.IsEmpty, string.Join("; ", mismatches.Take(5)));
            await Wait.UntilAsync(() => stopped.Count(a => a.OperationName == "batching.batch" && Equals(a.GetTagItem(BatchingTelemetry.ProcessorTag), name)) == handlerSaw.Count, "every batch activity stops");

            Activity[] batches = [.. stopped.Where(a => a.OperationName == "batching.batch" && Equals(a.GetTagItem(BatchingTelemetry.ProcessorTag), name))];
            Assert.NotEmpty(batches);
            Assert.All(batches, b =>
            {
                Assert.Null(b.Parent);
                Assert.Equal(default, b.ParentSpanId);
                Assert.NotEmpty(b.Links);
            });
            var callerSpans = callers.Select(c => c.SpanId).ToHashSet();
            Assert.All(batches.SelectMany(b => b.Links), l => Assert.Contains(l.Context.SpanId, callerSpans));
            Assert.Equal(callerSpans.Count, batches.Sum(b => b.Links.Count()));

            // The handler runs inside its batch's activity, which has no parent.
            Assert.All(handlerSaw, saw => Assert.Equal(("batching.batch", null), saw));
        }
    }
}
