using System.Reflection;

namespace Batching.Samples.WebApi.Completions;

/// <summary>One sequence of the character model: the last characters it saw, its random stream, how many tokens it may still write.</summary>
public struct CharState
{
    internal ulong History;   // the last Order symbols, 8 bits each, newest lowest
    internal int Known;       // how many of them are real (a short prompt has fewer)
    internal ulong Random;    // xorshift64* state
    internal int Remaining;   // tokens it may still write (the request's max_tokens)
    internal char Previous;
}

/// <summary>A request to the model: the prompt, how many characters to write at most, and a seed.</summary>
public readonly record struct CompletionPrompt(string Prompt, int MaxTokens, ulong Seed);

/// <summary>
/// A character-level n-gram language model (order 4, with back-off to shorter contexts): its weights are the
/// character counts of this repository's README, counted when the app starts. It is small and honest about what it is:
/// it writes text that looks like the README, one character per step, and it runs here on a CPU in microseconds. A
/// real decoder (an ILGPU kernel, ONNX Runtime GenAI, LLamaSharp's batched executor) plugs into the same
/// <see cref="GenerationStep{TState, TToken}"/> contract; <see cref="StepDelay"/> adds a device-like fixed cost per step.
/// </summary>
public sealed class CharModel
{
    /// <summary>The longest context the model conditions on, in characters.</summary>
    public const int Order = 4;

    private readonly Dictionary<char, byte> _symbols = [];
    private readonly char[] _alphabet;
    private readonly Dictionary<ulong, Distribution> _contexts = [];
    private long _sequenceSteps;
    private long _steps;

    public CharModel(string corpus, TimeSpan stepDelay)
    {
        StepDelay = stepDelay;
        var alphabet = corpus.Distinct().Order().Take(255).ToArray();
        _alphabet = alphabet;
        for (int i = 0; i < alphabet.Length; i++)
        {
            _symbols[alphabet[i]] = (byte)i;
        }

        // Count, for every context of 0..Order symbols, which symbol follows it.
        var counts = new Dictionary<ulong, Dictionary<byte, int>>();
        ulong history = 0;
        int known = 0;
        foreach (char c in corpus)
        {
            if (!_symbols.TryGetValue(c, out byte symbol))
            {
                continue;
            }

            for (int order = 0; order <= Math.Min(known, Order); order++)
            {
                ulong key = Key(history, order);
                if (!counts.TryGetValue(key, out Dictionary<byte, int>? next))
                {
                    counts[key] = next = [];
                }

                next[symbol] = next.GetValueOrDefault(symbol) + 1;
            }

            history = (history << 8 | symbol) & 0xFFFF_FFFFUL;
            known++;
        }

        foreach ((ulong key, Dictionary<byte, int> next) in counts)
        {
            _contexts[key] = new Distribution([.. next.Keys], [.. next.Values]);
        }
    }

    /// <summary>A simulated fixed device cost added to every step (configuration <c>Generation:StepDelayMs</c>); zero by default.</summary>
    public TimeSpan StepDelay { get; }

    /// <summary>Sequence-steps run so far (each step adds the number of sequences in it): what the device spent.</summary>
    public long SequenceSteps => Interlocked.Read(ref _sequenceSteps);

    /// <summary>Steps run so far.</summary>
    public long Steps => Interlocked.Read(ref _steps);

    /// <summary>The model trained on the README embedded in this assembly.</summary>
    public static CharModel FromEmbeddedReadme(TimeSpan stepDelay)
    {
        using Stream stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("Batching.Samples.WebApi.corpus.md")
            ?? throw new InvalidOperationException("The model's corpus (the README) is not embedded in the sample.");
        using var reader = new StreamReader(stream);
        return new CharModel(reader.ReadToEnd(), stepDelay);
    }

    /// <summary>Characters of <paramref name="text"/> the model does not know, or null when it knows them all.</summary>
    public string? UnknownCharacters(string text)
    {
        string unknown = new([.. text.Where(c => !_symbols.ContainsKey(c)).Distinct().Take(10)]);
        return unknown.Length == 0 ? null : unknown;
    }

    /// <summary>The initial state: the prompt's last characters as context.</summary>
    public CharState Start(CompletionPrompt prompt)
    {
        var state = new CharState { Random = prompt.Seed | 1, Remaining = prompt.MaxTokens, Previous = prompt.Prompt.Length > 0 ? prompt.Prompt[^1] : '\0' };
        foreach (char c in prompt.Prompt)
        {
            if (_symbols.TryGetValue(c, out byte symbol))
            {
                state.History = (state.History << 8 | symbol) & 0xFFFF_FFFFUL;
                state.Known = Math.Min(state.Known + 1, Order);
            }
        }

        return state;
    }

    /// <summary>One step over every active sequence: samples each one's next character from the longest context the
    /// model has seen; a sequence ends at a blank line (the end of a paragraph) or when it has written its max_tokens.</summary>
    public ValueTask Step(Memory<CharState> states, Memory<char> tokens, Memory<bool> finished, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _steps);
        Interlocked.Add(ref _sequenceSteps, states.Length);
        Span<CharState> s = states.Span;
        Span<char> t = tokens.Span;
        Span<bool> f = finished.Span;
        for (int i = 0; i < s.Length; i++)
        {
            ref CharState state = ref s[i];
            byte symbol = Sample(ref state);
            char c = _alphabet[symbol];
            t[i] = c;
            f[i] = --state.Remaining <= 0 || (c == '\n' && state.Previous == '\n');
            state.Previous = c;
            state.History = (state.History << 8 | symbol) & 0xFFFF_FFFFUL;
            state.Known = Math.Min(state.Known + 1, Order);
        }

        return StepDelay > TimeSpan.Zero ? new ValueTask(Task.Delay(StepDelay, cancellationToken)) : default;
    }

    private byte Sample(ref CharState state)
    {
        for (int order = state.Known; order >= 0; order--)
        {
            if (_contexts.TryGetValue(Key(state.History, order), out Distribution? next))
            {
                // xorshift64*: a seeded stream per sequence, so a seed reproduces a completion.
                state.Random ^= state.Random >> 12;
                state.Random ^= state.Random << 25;
                state.Random ^= state.Random >> 27;
                ulong draw = state.Random * 2685821657736338717UL;
                return next.Sample((int)((draw >> 33) % (ulong)next.Total));
            }
        }

        return 0;
    }

    private static ulong Key(ulong history, int order) =>
        (order == 0 ? 0 : history & ((1UL << (8 * order)) - 1)) | (ulong)order << 40;

    private sealed class Distribution
    {
        private readonly byte[] _symbols;
        private readonly int[] _cumulative;

        public Distribution(byte[] symbols, int[] counts)
        {
            _symbols = symbols;
            _cumulative = new int[counts.Length];
            int total = 0;
            for (int i = 0; i < counts.Length; i++)
            {
                total += counts[i];
                _cumulative[i] = total;
            }

            Total = total;
        }

        public int Total { get; }

        public byte Sample(int draw)
        {
            int index = Array.BinarySearch(_cumulative, draw + 1);
            return _symbols[index >= 0 ? index : ~index];
        }
    }
}
