// A YARP gateway in front of several instances of samples/WebApi: it routes each inference request to the instance
// with the lowest estimated wait (from the load every instance reports on every response), takes an instance out of
// rotation while it is unhealthy or near full, and retries a refused or failed request once on the next-best one.
using Batching.Samples.Gateway;

await using WebApplication app = GatewayApp.Build(args);
await app.RunAsync();
