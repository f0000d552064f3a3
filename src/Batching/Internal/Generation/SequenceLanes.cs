using System.Diagnostics;

namespace Batching.Internal.Generation;

/// <summary>
/// The sequences waiting to join a generation batch: one FIFO lane per priority level (intrusive lists, so a cancelled
/// or expired sequence leaves from the middle in O(1)), drawn from by the same deficit round robin as the batching
/// core's <c>AdmissionQueue</c>, counted in sequences: the lane whose turn it is admits up to its weight, then the turn
/// moves on, and the turn and what is left of it persist across step boundaries. A lane whose head does not fit the
/// weight budget sits out that boundary (FIFO within a lane is never broken). Guarded by the engine's lock.
/// </summary>
internal sealed class SequenceLanes<TPrompt, TState, TToken>
{
    private readonly Lane[] _lanes;
    private readonly int[] _weights;
    private int _turn, _turnLeft;

    public SequenceLanes(int[] weights)
    {
        _weights = weights;
        _lanes = new Lane[weights.Length];
        _turnLeft = weights[0];
    }

    public int Count { get; private set; }

    public int Levels => _lanes.Length;

    public int CountIn(int level) => _lanes[level].Count;

    public void Add(Sequence<TPrompt, TState, TToken> sequence)
    {
        ref Lane lane = ref _lanes[sequence.Priority];
        sequence.Previous = lane.Tail;
        sequence.Next = null;
        if (lane.Tail is null)
        {
            lane.Head = sequence;
        }
        else
        {
            lane.Tail.Next = sequence;
        }

        lane.Tail = sequence;
        lane.Count++;
        Count++;
    }

    public void Remove(Sequence<TPrompt, TState, TToken> sequence)
    {
        ref Lane lane = ref _lanes[sequence.Priority];
        Debug.Assert(lane.Count > 0);
        if (sequence.Previous is null)
        {
            lane.Head = sequence.Next;
        }
        else
        {
            sequence.Previous.Next = sequence.Next;
        }

        if (sequence.Next is null)
        {
            lane.Tail = sequence.Previous;
        }
        else
        {
            sequence.Next.Previous = sequence.Previous;
        }

        sequence.Previous = sequence.Next = null;
        lane.Count--;
        Count--;
    }

    /// <summary>Takes the next sequence by the fair share whose weight fits <paramref name="weightLeft"/>, or null.</summary>
    public Sequence<TPrompt, TState, TToken>? TakeNext(long weightLeft)
    {
        if (Count == 0)
        {
            return null;
        }

        // At most one pass over the lanes: a lane that is empty or whose head does not fit gives up its turn.
        for (int tried = 0; tried < _lanes.Length; tried++)
        {
            ref Lane lane = ref _lanes[_turn];
            if (lane.Head is { } head && head.Weight <= weightLeft)
            {
                Remove(head);
                if (--_turnLeft == 0)
                {
                    NextTurn();
                }

                return head;
            }

            NextTurn();
        }

        return null;
    }

    /// <summary>Every waiting sequence, in lane order; for shutdown.</summary>
    public void RemoveAll(List<Sequence<TPrompt, TState, TToken>> into)
    {
        for (int level = 0; level < _lanes.Length; level++)
        {
            while (_lanes[level].Head is { } head)
            {
                Remove(head);
                into.Add(head);
            }
        }
    }

    private void NextTurn()
    {
        _turn = (_turn + 1) % _lanes.Length;
        _turnLeft = _weights[_turn];
    }

    private struct Lane
    {
        public Sequence<TPrompt, TState, TToken>? Head;
        public Sequence<TPrompt, TState, TToken>? Tail;
        public int Count;
    }
}
