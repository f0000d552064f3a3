// An inference service: POST /v1/infer awaits a batch processor that coalesces concurrent requests into batches
// for a dense layer on the GPU (or the managed CPU path when there is none). See InferenceApp for the wiring.
using Batching.Samples.WebApi;

await using WebApplication app = InferenceApp.Build(args);
await app.RunAsync();
