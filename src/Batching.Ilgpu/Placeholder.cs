namespace Batching.Ilgpu; internal static class Placeholder { }
