// An OpenAI-compatible embedding service: POST /v1/embeddings runs all-MiniLM-L6-v2 on ONNX Runtime through a
// Microsoft.Extensions.AI pipeline whose UseBatching() stage coalesces concurrent requests. See EmbeddingApp.
using Batching.Samples.EmbeddingService;

await using WebApplication app = EmbeddingApp.Build(args);
await app.RunAsync();
