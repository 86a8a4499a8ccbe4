"""Continuous batching: which sequences compute which tokens in the next engine step.

Every step has a token budget. Running sequences go first, in admission order: a decoding one
computes its one new token, one still in prefill computes as much of its prompt as the budget
leaves (chunked prefill, so a long prompt never stalls the decodes). Waiting sequences are then
admitted while budget and sequence slots last (a request's n samples take n slots); admission
first takes the longest run of cached blocks from the prefix cache, so those tokens are never
computed again.

When a sequence needs a block and the pool has none, the most recently admitted running
sequence is preempted: its blocks are released (full ones stay cached, so its recompute is
mostly prefix hits) and it goes back to the front of the queue.

The n samples of one request share its prefill: only the first (the leader) is queued; the
others stay parked until the leader's prompt is computed, then fork from it, sharing its full
blocks and copying its partly filled last block (copy on write). All of this is plain Python; the
engine runs the model on the chunks and reports the sampled tokens back through `postprocess`.

With a drafter (speculative decoding), a decoding sequence may also compute a draft: tokens
guessed to follow, verified in the same step (`speculative.py`). While no more than
`speculative_max_batch` sequences run, each decoding one gets the blocks for its draft, but only
free ones: a draft never preempts a sequence or evicts a cached prefix. `postprocess` advances
the sequence past the draft tokens it kept and frees the blocks that only held rejected ones;
a block is registered in the prefix cache only once all its tokens are kept and computed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tts.engine.native.drafter import NgramDrafter
from tts.engine.native.prefix_cache import ROOT_HASH, PrefixCache
from tts.engine.native.sequence import Sequence, Status


@dataclass
class Chunk:
    """`num_tokens` tokens of `seq`, from position `start`, computed in this step, followed by
    `draft` (tokens that are not the sequence's yet: the step verifies them)."""

    seq: Sequence
    start: int
    num_tokens: int
    draft: list[int] = field(default_factory=list)

    @property
    def needs_logits(self) -> bool:
        return self.start + self.num_tokens == self.seq.num_tokens


@dataclass
class Batch:
    """One step's work. `copies` (src, dst) block copies run before the forward pass; `samples`
    lists, for each chunk that needs logits (in order), the sequences that sample from them."""

    chunks: list[Chunk] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)
    samples: list[list[Sequence]] = field(default_factory=list)


@dataclass
class SchedulerStats:
    preemptions: int = 0
    prefix_hit_tokens: int = 0  # prompt tokens found in the cache on first admission
    prompt_tokens: int = 0  # prompt tokens of admitted sequences, cached ones included
    computed_tokens: int = 0  # tokens run through the model (prefill, decode, recompute, drafts)
    forks: int = 0
    speculative_steps: int = 0  # decode steps of one sequence that verified a draft
    drafted_tokens: int = 0
    accepted_tokens: int = 0  # draft tokens kept (each such step also yields one of its own)


class Scheduler:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        drafter: NgramDrafter | None = None,
        speculative_max_batch: int = 0,
    ) -> None:
        self.cache = PrefixCache(num_blocks, block_size)
        self.block_size = block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.drafter = drafter
        self.speculative_max_batch = speculative_max_batch
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.parked: dict[int, list[Sequence]] = {}  # leader seq_id -> its siblings
        self.pending_copies: list[tuple[int, int]] = []
        self.stats = SchedulerStats()

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seqs: list[Sequence]) -> None:
        """Queue the samples of one request; the first one leads, the others wait to fork."""
        leader, *siblings = seqs
        leader.status = Status.WAITING
        self.waiting.append(leader)
        for seq in siblings:
            seq.status = Status.PARKED
        if siblings:
            self.parked[leader.seq_id] = siblings

    def abort(self, seqs: list[Sequence]) -> None:
        """Drop sequences wherever they are and release their blocks at once."""
        for seq in seqs:
            if seq.status is Status.RUNNING:
                self.running.remove(seq)
                self.cache.release(seq.block_table)
            elif seq.status is Status.WAITING:
                self.waiting.remove(seq)
            self.parked.pop(seq.seq_id, None)
            seq.block_table, seq.status = [], Status.FINISHED

    def finish(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.cache.release(seq.block_table)
        seq.block_table, seq.status = [], Status.FINISHED

    def schedule(self) -> Batch:
        batch = Batch(copies=self.pending_copies)
        self.pending_copies = []
        budget = self.max_num_batched_tokens
        drafts = self._drafts()
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            num_tokens = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if not self._reserve(seq, num_tokens):
                continue  # seq itself was preempted; running[i] is now the next one
            draft = self._reserve_draft(seq, drafts.get(seq, [])[: budget - num_tokens])
            batch.chunks.append(Chunk(seq, seq.num_computed_tokens, num_tokens, draft))
            budget -= num_tokens + len(draft)
            i += 1
        # A leader brings its parked siblings into `running` when they fork: count them as
        # running already. An empty batch admits anyway, so a request of n > max_num_seqs runs.
        occupied = sum(self._slots(seq) for seq in self.running)
        while self.waiting and budget > 0:
            seq = self.waiting[0]
            if occupied and occupied + self._slots(seq) > self.max_num_seqs:
                break
            num_tokens = self._admit(seq, budget)
            if num_tokens == 0:
                break
            occupied += self._slots(seq)
            self.waiting.popleft()
            self.running.append(seq)
            batch.chunks.append(Chunk(seq, seq.num_computed_tokens, num_tokens))
            budget -= num_tokens
        for chunk in batch.chunks:
            if chunk.needs_logits:
                siblings = self.parked.get(chunk.seq.seq_id, [])
                batch.samples.append([chunk.seq, *siblings])
        return batch

    def postprocess(self, batch: Batch, tokens: list[list[list[int]]]) -> None:
        """Account for a finished step: `tokens` holds, per group of `batch.samples` and per
        sequence in it, its new tokens: one, or for a chunk with a draft the draft tokens kept
        and one more."""
        for seqs, new_tokens in zip(batch.samples, tokens):
            for seq, new in zip(seqs, new_tokens):
                seq.token_ids += new
        for chunk in batch.chunks:
            seq = chunk.seq
            seq.num_computed_tokens += chunk.num_tokens
            self.stats.computed_tokens += chunk.num_tokens + len(chunk.draft)
            if chunk.draft:
                self._settle_draft(chunk)
            self._register_full_blocks(seq)
        for seqs in batch.samples:
            if len(seqs) > 1:
                self._fork(seqs[0], seqs[1:])

    def _drafts(self) -> dict[Sequence, list[int]]:
        """This step's drafts for the decoding sequences, while few enough run that verifying
        drafts pays (see EngineConfig.speculative_max_batch)."""
        if self.drafter is None or len(self.running) > self.speculative_max_batch:
            return {}
        decoding = [s for s in self.running if s.num_tokens - s.num_computed_tokens == 1]
        return self.drafter.propose(decoding, self.running)

    def _reserve_draft(self, seq: Sequence, draft: list[int]) -> list[int]:
        """The part of `draft` whose blocks free blocks cover, with those blocks given to `seq`
        (whose own next token already has its block)."""
        room = (len(seq.block_table) + len(self.cache.pool.free)) * self.block_size
        draft = draft[: room - seq.num_tokens]
        if draft:
            seq.block_table += self.cache.allocate(self._blocks_missing(seq, 1 + len(draft)))
        return draft

    def _settle_draft(self, chunk: Chunk) -> None:
        """After a step that verified `chunk.draft`: count the draft tokens kept as computed and
        free the blocks past them (their KV holds rejected tokens, to be overwritten)."""
        seq = chunk.seq
        accepted = seq.num_tokens - seq.num_computed_tokens - 1
        seq.num_computed_tokens += accepted
        keep = -(-seq.num_computed_tokens // self.block_size)
        self.cache.release(seq.block_table[keep:])
        del seq.block_table[keep:]
        self.stats.speculative_steps += 1
        self.stats.drafted_tokens += len(chunk.draft)
        self.stats.accepted_tokens += accepted

    def _slots(self, seq: Sequence) -> int:
        """Sequence slots `seq` takes: itself and, until they fork, its parked siblings."""
        return 1 + len(self.parked.get(seq.seq_id, ()))

    def _blocks_missing(self, seq: Sequence, num_tokens: int) -> int:
        needed = -(-(seq.num_computed_tokens + num_tokens) // self.block_size)
        return max(needed - len(seq.block_table), 0)

    def _reserve(self, seq: Sequence, num_tokens: int) -> bool:
        """Give a running sequence the blocks for `num_tokens` more, preempting the most
        recently admitted others if needed; False if `seq` itself had to be preempted."""
        missing = self._blocks_missing(seq, num_tokens)
        while missing > self.cache.num_available:
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        seq.block_table += self.cache.allocate(missing) if missing else []
        return True

    def _admit(self, seq: Sequence, budget: int) -> int:
        """Give a waiting sequence its cached prefix and blocks for its first chunk; the chunk's
        size, or 0 (and nothing held) if the pool cannot take it now."""
        # Leave at least one token to compute: its logits give the next token. A sequence that
        # scores its prompt needs every prompt position's logits: it takes nothing cached.
        max_blocks = 0 if seq.needs_prompt_logits else (seq.num_tokens - 1) // self.block_size
        block_ids, hashes = self.cache.match(seq.token_ids, max_blocks)
        seq.block_table, seq.block_hashes = block_ids, hashes
        seq.num_computed_tokens = len(block_ids) * self.block_size
        num_tokens = min(seq.num_tokens - seq.num_computed_tokens, budget)
        fresh = self.cache.allocate(self._blocks_missing(seq, num_tokens))
        if fresh is None:
            self.cache.release(block_ids)
            seq.block_table, seq.block_hashes, seq.num_computed_tokens = [], [], 0
            return 0
        seq.block_table += fresh
        seq.status = Status.RUNNING
        if not seq.admitted:
            seq.admitted = True
            seq.num_cached_tokens = seq.num_computed_tokens
            self.stats.prefix_hit_tokens += seq.num_computed_tokens
            self.stats.prompt_tokens += seq.num_prompt_tokens
        return num_tokens

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.cache.release(seq.block_table)
        seq.block_table, seq.block_hashes, seq.num_computed_tokens = [], [], 0
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.stats.preemptions += 1

    def _register_full_blocks(self, seq: Sequence) -> None:
        size = self.block_size
        for index in range(len(seq.block_hashes), seq.num_computed_tokens // size):
            parent = seq.block_hashes[-1] if seq.block_hashes else ROOT_HASH
            tokens = seq.token_ids[index * size : (index + 1) * size]
            seq.block_hashes.append(self.cache.register(seq.block_table[index], parent, tokens))

    def _fork(self, leader: Sequence, siblings: list[Sequence]) -> None:
        """Start the parked siblings from the leader's computed prompt."""
        del self.parked[leader.seq_id]
        num_full = leader.num_computed_tokens // self.block_size
        shared = leader.block_table[:num_full]
        partial = leader.block_table[num_full] if len(leader.block_table) > num_full else None
        for seq in siblings:
            copy = self.cache.allocate(1) if partial is not None else []
            if copy is None:  # no room to fork now: prefill later, mostly from the cache
                seq.status = Status.WAITING
                self.waiting.append(seq)
                continue
            for block_id in shared:
                self.cache.pool.acquire(self.cache.pool.blocks[block_id])
            if copy:
                self.pending_copies.append((partial, copy[0]))
            seq.block_table = shared + copy
            seq.block_hashes = list(leader.block_hashes)
            seq.num_computed_tokens = leader.num_computed_tokens
            seq.num_cached_tokens = seq.num_prompt_tokens
            seq.admitted, seq.status = True, Status.RUNNING
            self.running.append(seq)
            self.stats.forks += 1
            self.stats.prompt_tokens += seq.num_prompt_tokens
            self.stats.prefix_hit_tokens += seq.num_prompt_tokens
