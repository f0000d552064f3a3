using System.Collections.Concurrent;
using Batching.Tests.TestSupport;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace Batching.Tests.Generation;

/// <summary>How one random consumer behaves: its sequence's length, after how many tokens it stops (by breaking out,
/// or by cancelling its token), and whether it reads slowly.</summary>
public sealed record ConsumerPlan(int Length, int StopAfter, bool StopByToken, bool Slow);

public sealed record GenerationWorkload(int MaxSequences, int MaxBuffered, int MaxTokens, int[] FailingSteps, ConsumerPlan[] Consumers)
{
    public override string ToString() =>
        $"MaxSequences={MaxSequences} MaxBuffered={MaxBuffered} MaxTokens={MaxTokens} Failing=[{string.Join(",", FailingSteps)}] " +
        $"Consumers=[{string.Join(" ", Consumers.Select(c => $"{c.Length}/{c.StopAfter}{(c.StopByToken ? "t" : "b")}{(c.Slow ? "s" : "")}"))}]";
}

public static class GenerationArbitraries
{
    public static Arbitrary<GenerationWorkload> Workloads()
    {
        Gen<ConsumerPlan> consumer =
            from length in Gen.Choose(1, 40)
            from stop in Gen.Frequency((3, Gen.Constant(-1)), (1, Gen.Choose(0, 40)))
            from byToken in Gen.Elements(true, false)
            from slow in Gen.Frequency((4, Gen.Constant(false)), (1, Gen.Constant(true)))
            select new ConsumerPlan(length, stop, byToken, slow);
        Gen<GenerationWorkload> workload =
            from maxSequences in Gen.Choose(1, 8)
            from maxBuffered in Gen.Choose(1, 6)
            from maxTokens in Gen.Choose(5, 50)
            from failCount in Gen.Choose(0, 3)
            from failing in Gen.ArrayOf(Gen.Choose(0, 120), failCount)
            from count in Gen.Choose(1, 24)
            from consumers in Gen.ArrayOf(consumer, count)
            select new GenerationWorkload(maxSequences, maxBuffered, maxTokens, failing, consumers);
        return workload.ToArbitrary();
    }
}

public class GenerationPropertyTests
{
    private enum Outcome { Completed, Stopped, Failed }

    [Property(Arbitrary = [typeof(GenerationArbitraries)], MaxTest = 60)]
    public async Task Every_sequence_ends_once_with_its_own_tokens_in_order_and_steps_respect_the_bounds(GenerationWorkload workload)
    {
        var model = new CountingModel();
        var failing = new HashSet<int>(workload.FailingSteps);
        var stoppedAt = new ConcurrentDictionary<int, int>(); // id -> steps started when its consumer stopped
        model.BeforeStep = (index, _) =>
        {
            if (failing.Contains(index))
            {
                throw new InvalidOperationException($"step {index} fails");
            }
        };
        await using var processor = model.Create(new GenerationOptions
        {
            MaxSequences = workload.MaxSequences,
            MaxBufferedTokens = workload.MaxBuffered,
            MaxTokensPerSequence = workload.MaxTokens,
        });

        async Task<(Outcome, List<int>)> Consume(int id, ConsumerPlan plan)
        {
            await Task.Yield();
            using var cts = new CancellationTokenSource();
            var tokens = new List<int>();
            try
            {
                await foreach (int token in processor.GenerateAsync((id, plan.Length), cts.Token))
                {
                    tokens.Add(token);
                    if (plan.Slow)
                    {
                        await Task.Delay(1);
                    }

                    if (tokens.Count == plan.StopAfter)
                    {
                        if (plan.StopByToken)
                        {
                            cts.Cancel();
                            stoppedAt[id] = model.StepsStarted;
                            continue; // the next MoveNextAsync throws
                        }

                        break;
                    }
                }

                if (tokens.Count == plan.StopAfter && !plan.StopByToken)
                {
                    stoppedAt[id] = model.StepsStarted;
                    return (Outcome.Stopped, tokens);
                }

                return (Outcome.Completed, tokens);
            }
            catch (OperationCanceledException) when (plan.StopByToken)
            {
                return (Outcome.Stopped, tokens);
            }
            catch (BatchExecutionException)
            {
                return (Outcome.Failed, tokens);
            }
        }

        var results = await Task.WhenAll(workload.Consumers.Select((plan, id) => Consume(id, plan))).WaitAsync(Wait.Bound);
        var failedIds = model.Steps.Where(p => failing.Contains(p.Key)).SelectMany(p => p.Value).ToHashSet();
        foreach (int[] ids in model.Steps.Values)
        {
            Assert.True(ids.Length <= workload.MaxSequences, $"a step of {ids.Length} exceeds MaxSequences");
            Assert.Equal(ids.Length, ids.Distinct().Count());
        }

        for (int id = 0; id < results.Length; id++)
        {
            var (outcome, tokens) = results[id];
            ConsumerPlan plan = workload.Consumers[id];
            int expectedLength = Math.Min(plan.Length, workload.MaxTokens);
            Assert.Equal(Enumerable.Range(0, tokens.Count).Select(i => CountingModel.TokenOf(id, i)), tokens);
            List<int> steps = model.StepsOf(id);
            switch (outcome)
            {
                case Outcome.Completed:
                    Assert.Equal(expectedLength, tokens.Count);
                    Assert.Equal(expectedLength, steps.Count(s => !failing.Contains(s)));
                    break;
                case Outcome.Failed:
                    Assert.Contains(id, failedIds);
                    Assert.True(steps.Last() == steps.First(failing.Contains), "a sequence was stepped after its step failed");
                    break;
                case Outcome.Stopped:
                    // Removed before the next step: at most the step in flight when it stopped carried it afterwards.
                    Assert.True(steps.Count == 0 || steps[^1] <= stoppedAt[id], $"sequence {id} stepped at {steps.LastOrDefault()} after stopping at {stoppedAt[id]}");
                    break;
            }

            Assert.True(steps.Count <= expectedLength, $"sequence {id} stepped {steps.Count} times, more than its {expectedLength} tokens");
        }

        await Wait.UntilAsync(() => processor.GetLoad() is { ActiveSequences: 0, QueuedSequences: 0 }, "every sequence left");
    }
}
