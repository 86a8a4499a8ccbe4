"""Model-free drafts for speculative decoding: continue a sequence the way text around it went on.

Reasoning traces repeat themselves: they restate the problem's numbers, reuse a step's wording,
and a request's samples (and a search's branches) write much the same steps. The drafter looks
up the sequence's last n tokens, for n from MAX_NGRAM down to MIN_NGRAM, in the sequence itself
(its prompt and its output so far: prompt-lookup decoding, Saxena 2023) and then in its peers,
the running sequences whose prompts start alike (suffix decoding's idea of drafting from other
requests, Oliaro et al. 2024); the tokens that followed the longest match, at its latest
occurrence, are the draft. When that occurrence is in the sequence itself, the text from there
on repeats with a period (the distance between the two occurrences), and the draft goes on
repeating it: a sequence caught in a loop drafts the loop in full. A miss drafts nothing and the
sequence decodes as usual.

Each sequence gets an index from n-gram to the end of its latest occurrence, extended as the
sequence grows, so a lookup costs a few dict probes per source however long the text. This
relies on a sequence's tokens only ever being appended to, which holds: rejected draft tokens
are never added to a sequence (see `speculative.py`).
"""

from __future__ import annotations

from collections import defaultdict
from weakref import WeakKeyDictionary

from tts.engine.native.sequence import Sequence

MAX_NGRAM = 4  # longest suffix looked up; longer matches predict better but are rarer
MIN_NGRAM = 1
# Sequences whose prompts share this many first tokens draft from each other: the n samples of
# a request, and a search's branches (requests that extend one problem's prompt).
PEER_PREFIX_TOKENS = 32


class NgramDrafter:
    """Proposes up to `num_tokens` draft tokens per sequence, never past where the sequence must
    end (its max_tokens, or the model's `max_model_len`)."""

    def __init__(self, num_tokens: int, max_model_len: int) -> None:
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        self.num_tokens = num_tokens
        self.max_model_len = max_model_len
        # n-gram -> end of its latest occurrence; kept as long as its sequence lives.
        self._indexes: WeakKeyDictionary[Sequence, _NgramIndex] = WeakKeyDictionary()

    def propose(self, seqs: list[Sequence], running: list[Sequence]) -> dict[Sequence, list[int]]:
        """Drafts for `seqs` (each about to decode, all of them in `running`), drawn from
        themselves and their peers among `running`; a sequence with no match is left out."""
        peers: defaultdict[tuple[int, ...], list[Sequence]] = defaultdict(list)
        for seq in running:
            peers[_prompt_prefix(seq)].append(seq)
            self._indexes.setdefault(seq, _NgramIndex()).extend(seq.token_ids)
        drafts = {}
        for seq in seqs:
            room = min(
                seq.params.max_tokens - len(seq.output_ids), self.max_model_len - seq.num_tokens
            )
            # The step's own token comes on top of the draft, and must also fit.
            limit = min(self.num_tokens, room - 1)
            if limit < 1:
                continue
            sources = [seq, *(s for s in peers[_prompt_prefix(seq)] if s is not seq)]
            draft = self._lookup(seq.token_ids, sources, limit)
            if draft:
                drafts[seq] = draft
        return drafts

    def _lookup(self, tokens: list[int], sources: list[Sequence], limit: int) -> list[int]:
        """The draft for a sequence of `tokens` from `sources` (itself first)."""
        for n in range(min(MAX_NGRAM, len(tokens)), MIN_NGRAM - 1, -1):
            suffix = tuple(tokens[-n:])
            for source in sources:
                end = self._indexes[source].ends.get(suffix)
                if end is None:
                    continue
                if source.token_ids is tokens:
                    period = tokens[end:]
                    return (period * -(-limit // len(period)))[:limit]
                return source.token_ids[end : end + limit]
        return []


class _NgramIndex:
    """n-grams of one sequence by the end (exclusive) of their latest occurrence. Occurrences
    that end at the sequence's last token are left out: nothing follows them yet, and the
    sequence's own suffix must find an earlier occurrence of itself."""

    def __init__(self) -> None:
        self.ends: dict[tuple[int, ...], int] = {}
        self.indexed = 0  # occurrences ending before this position are in `ends`

    def extend(self, tokens: list[int]) -> None:
        for end in range(max(self.indexed, 1), len(tokens)):
            for n in range(MIN_NGRAM, min(MAX_NGRAM, end) + 1):
                self.ends[tuple(tokens[end - n : end])] = end
        self.indexed = len(tokens)


def _prompt_prefix(seq: Sequence) -> tuple[int, ...]:
    return tuple(seq.token_ids[: min(PEER_PREFIX_TOKENS, seq.num_prompt_tokens)])
