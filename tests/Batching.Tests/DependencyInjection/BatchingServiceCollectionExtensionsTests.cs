using Batching.Internal;
using Batching.Tests.TestSupport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Batching.Tests.DependencyInjection;

public class BatchingServiceCollectionExtensionsTests
{
    [Fact]
    public void AddBatching_registers_the_system_clock_only_if_none_is_registered()
    {
        var services = new ServiceCollection();
        services.AddBatching();
        using (var provider = services.BuildServiceProvider())
        {
            Assert.Same(TimeProvider.System, provider.GetRequiredService<TimeProvider>());
        }

        var fake = new FakeTimeProvider();
        var withFake = new ServiceCollection().AddSingleton<TimeProvider>(fake);
        withFake.AddBatching();
        using var fakeProvider = withFake.BuildServiceProvider();
        Assert.Same(fake, fakeProvider.GetRequiredService<TimeProvider>());
    }

    [Fact]
    public async Task AddProcessor_registers_a_configured_singleton_that_uses_the_container_clock()
    {
        var fake = new FakeTimeProvider();
        var services = new ServiceCollection().AddSingleton<TimeProvider>(fake);
        services.AddBatching().AddProcessor<int, int>(new RecordingHandler().Handler, o => { o.MaxBatchSize = 7; o.MaxDelay = TimeSpan.FromSeconds(3); });
        await using var provider = services.BuildServiceProvider();

        var processor = provider.GetRequiredService<IBatchProcessor<int, int>>();
        Assert.Same(processor, provider.GetRequiredService<IBatchProcessor<int, int>>());
        var engine = Assert.IsType<BatchEngine<int, int>>(processor);
        Assert.Equal(7, engine.Options.MaxBatchSize);
        Assert.Same(fake, engine.Time);
        Assert.Equal("Int32->Int32", engine.DisplayName);

        var call = processor.ProcessAsync(20);
        await Wait.UntilIdleAsync(processor);
        fake.Advance(TimeSpan.FromSeconds(3));
        Assert.Equal(41, await call.WithinBoundAsync());
    }

    [Fact]
    public async Task A_handler_type_is_resolved_from_the_container()
    {
        var services = new ServiceCollection();
        services.AddSingleton<Offset>(new Offset(1000));
        services.AddBatching().AddProcessor<int, int, OffsetHandler>(o => o.MaxDelay = TimeSpan.Zero);
        await using var provider = services.BuildServiceProvider();

        Assert.Equal(1005, await provider.GetRequiredService<IBatchProcessor<int, int>>().ProcessAsync(5).WithinBoundAsync());
    }

    [Fact]
    public async Task A_handler_factory_receives_the_service_provider()
    {
        var services = new ServiceCollection();
        services.AddSingleton(new Offset(7));
        services.AddBatching().AddProcessor<int, int>(sp => new OffsetHandler(sp.GetRequiredService<Offset>()).HandleAsync, o => o.MaxDelay = TimeSpan.Zero);
        await using var provider = services.BuildServiceProvider();

        Assert.Equal(12, await provider.GetRequiredService<IBatchProcessor<int, int>>().ProcessAsync(5).WithinBoundAsync());
    }

    [Fact]
    public async Task Keyed_processors_of_the_same_types_coexist_with_their_own_options()
    {
        var services = new ServiceCollection();
        services.AddBatching()
            .AddKeyedProcessor<int, int>("small", new OffsetHandler(new Offset(1)).HandleAsync, o => { o.MaxBatchSize = 2; o.MaxDelay = TimeSpan.Zero; })
            .AddKeyedProcessor<int, int>("large", new OffsetHandler(new Offset(2)).HandleAsync, o => { o.MaxBatchSize = 64; o.MaxDelay = TimeSpan.Zero; });
        await using var provider = services.BuildServiceProvider();

        var small = provider.GetRequiredKeyedService<IBatchProcessor<int, int>>("small");
        var large = provider.GetRequiredKeyedService<IBatchProcessor<int, int>>("large");
        Assert.NotSame(small, large);
        Assert.Equal(11, await small.ProcessAsync(10).WithinBoundAsync());
        Assert.Equal(12, await large.ProcessAsync(10).WithinBoundAsync());
        Assert.Equal("small", ((BatchEngine<int, int>)small).DisplayName);
        Assert.Equal(64, ((BatchEngine<int, int>)large).Options.MaxBatchSize);
    }

    [Fact]
    public async Task Options_can_also_be_configured_by_name_elsewhere()
    {
        var services = new ServiceCollection();
        services.AddBatching().AddProcessor<int, int>(new RecordingHandler().Handler);
        services.Configure<BatchingOptions>(BatchingBuilderExtensions.OptionsName<int, int>(null), o => o.MaxBatchSize = 9);
        await using var provider = services.BuildServiceProvider();

        Assert.Equal(9, provider.GetRequiredService<IOptionsMonitor<BatchingOptions>>().Get(BatchingBuilderExtensions.OptionsName<int, int>(null)).MaxBatchSize);
        Assert.Equal(9, ((BatchEngine<int, int>)provider.GetRequiredService<IBatchProcessor<int, int>>()).Options.MaxBatchSize);
    }

    [Fact]
    public void Invalid_options_fail_when_the_processor_is_built_naming_the_setting()
    {
        var services = new ServiceCollection();
        services.AddBatching().AddProcessor<int, int>(new RecordingHandler().Handler, o => o.QueueCapacity = 10);
        using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<ArgumentException>(() => provider.GetRequiredService<IBatchProcessor<int, int>>());
        Assert.Equal(nameof(BatchingOptions.QueueCapacity), error.ParamName);
    }

    [Fact]
    public async Task Disposing_the_container_drains_and_disposes_the_processor()
    {
        var services = new ServiceCollection();
        services.AddBatching().AddProcessor<int, int>(new RecordingHandler().Handler, o => o.MaxDelay = TimeSpan.FromHours(1));
        var provider = services.BuildServiceProvider();
        var processor = provider.GetRequiredService<IBatchProcessor<int, int>>();
        var pending = processor.ProcessAsync(1);

        await provider.DisposeAsync();

        Assert.Equal(3, await pending.WithinBoundAsync());
        await Assert.ThrowsAsync<ObjectDisposedException>(() => processor.ProcessAsync(2).AsTask());
    }

    public sealed record Offset(int Value);

    public sealed class OffsetHandler(Offset offset) : IBatchHandler<int, int>
    {
        public ValueTask HandleAsync(ReadOnlyMemory<int> inputs, Memory<int> outputs, CancellationToken cancellationToken)
        {
            for (int i = 0; i < inputs.Length; i++)
            {
                outputs.Span[i] = inputs.Span[i] + offset.Value;
            }

            return ValueTask.CompletedTask;
        }
    }
}
