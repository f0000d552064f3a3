using Batching;
using Batching.Extensions.AI.Internal;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Microsoft.Extensions.AI;

/// <summary>Adds dynamic batching to a Microsoft.Extensions.AI embedding generator pipeline.</summary>
public static class BatchingEmbeddingGeneratorBuilderExtensions
{
    /// <summary>
    /// Coalesces concurrent <see cref="IEmbeddingGenerator{TInput, TEmbedding}.GenerateAsync"/> calls, each carrying one
    /// or many values, into calls to the inner generator of at most <see cref="BatchingOptions.MaxBatchSize"/> values,
    /// and hands each caller its own embeddings in its own order.
    /// </summary>
    /// <remarks>
    /// <para><b>Partitioning.</b> Calls are batched together only when their <see cref="EmbeddingGenerationOptions"/> are
    /// equivalent: the same <see cref="EmbeddingGenerationOptions.ModelId"/> (ordinal), the same
    /// <see cref="EmbeddingGenerationOptions.Dimensions"/>, the same <see cref="EmbeddingGenerationOptions.RawRepresentationFactory"/>
    /// (delegate equality) and the same <see cref="EmbeddingGenerationOptions.AdditionalProperties"/> (same keys, values
    /// equal by <see cref="object.Equals(object?)"/>); <see langword="null"/> options equal empty ones. Each distinct set
    /// gets its own batch processor, created on first use and configured by <paramref name="configure"/>; the inner
    /// generator receives a copy of the first caller's options of that set. At most
    /// <see cref="MaxPartitions"/> sets are batched; calls with further sets go to the inner generator unbatched.</para>
    /// <para><b>Usage.</b> When the inner result carries <see cref="GeneratedEmbeddings{TEmbedding}.Usage"/>, each count (input,
    /// output, total, cached input and reasoning tokens, and every <see cref="UsageDetails.AdditionalCounts"/> entry) is
    /// apportioned to the values of that inner call by position (value i of n gets
    /// <c>floor((i+1)·T/n) − floor(i·T/n)</c> of total T), and a caller's usage is the sum over its values, so the
    /// callers' counts add up exactly to the inner totals. A count is reported to a caller only if every inner call that
    /// carried its values reported it; with none, <see cref="GeneratedEmbeddings{TEmbedding}.Usage"/> is
    /// <see langword="null"/>. The inner result's <see cref="GeneratedEmbeddings{TEmbedding}.AdditionalProperties"/> are not
    /// passed on.</para>
    /// <para><b>Failures.</b> An inner failure fails exactly the callers whose values were in the failed inner call, with
    /// <see cref="BatchExecutionException"/> (its <see cref="BatchExecutionException.ItemFailures"/> name the caller's
    /// failed value indexes; the inner exception is its <see cref="Exception.InnerException"/>). Set
    /// <see cref="BatchingOptions.PoisonIsolationDepth"/> to split a failed call and fail only the values that fail alone.
    /// Cancelling one caller's token removes only that caller's values.</para>
    /// <para><b>Telemetry.</b> Each processor is named <see cref="BatchingOptions.Name"/> when set, else after the inner
    /// generator's <see cref="EmbeddingGeneratorMetadata"/> (<c>provider/model</c>), with the model id and dimensions of
    /// a non-default partition appended; its metrics and <c>batching.batch</c> activities are those of any processor. The
    /// generator answers <c>GetService(typeof(IBatchingHealthContributor))</c> with a contributor reporting every
    /// partition, for <see cref="BatchingHealthCheck"/>. Put <c>UseOpenTelemetry()</c> before <c>UseBatching()</c> for one
    /// span per caller (each batch activity links to the spans of its callers), after it for one span per inner call
    /// (nested under its batch activity), or both.</para>
    /// </remarks>
    /// <typeparam name="TInput">The type of the values embedded.</typeparam>
    /// <typeparam name="TEmbedding">The type of the embeddings.</typeparam>
    /// <param name="builder">The pipeline builder.</param>
    /// <param name="configure">Sets the options of every partition's processor; <see langword="null"/> for the defaults.
    /// <see cref="BatchingOptions.ItemWeight"/>, when set, must be a <c>Func&lt;TInput, int&gt;</c>.
    /// <see cref="BatchingOptions.OutputCheck"/> is ignored (the middleware checks the inner result itself).</param>
    /// <returns>The builder, for chaining.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="builder"/> is null.</exception>
    /// <exception cref="ArgumentException">Thrown by <see cref="EmbeddingGeneratorBuilder{TInput, TEmbedding}.Build"/>
    /// when a setting is out of range; <see cref="ArgumentException.ParamName"/> names it.</exception>
    public static EmbeddingGeneratorBuilder<TInput, TEmbedding> UseBatching<TInput, TEmbedding>(
        this EmbeddingGeneratorBuilder<TInput, TEmbedding> builder, Action<BatchingOptions>? configure = null)
        where TEmbedding : Embedding
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Use((inner, services) =>
        {
            var options = new BatchingOptions();
            configure?.Invoke(options);
            options.TimeProvider ??= services.GetService<TimeProvider>();
            BatchingEmbeddingGenerator<TInput, TEmbedding>.ValidateOptions(options);
            return new BatchingEmbeddingGenerator<TInput, TEmbedding>(inner, options,
                services.GetService<ILoggerFactory>(), services.GetService<System.Diagnostics.Metrics.IMeterFactory>());
        });
    }

    /// <summary>The most distinct sets of <see cref="EmbeddingGenerationOptions"/> one batching generator batches: 64.
    /// Bounds the processors a caller choosing arbitrary model ids can create.</summary>
    public const int MaxPartitions = 64;
}
