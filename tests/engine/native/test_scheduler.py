"""The scheduler driven by hand, as the engine drives it, with made-up next tokens: no model."""

from __future__ import annotations

import itertools

from tts.engine import SamplingParams
from tts.engine.native.scheduler import Scheduler
from tts.engine.native.sequence import Sequence, Status

ids = itertools.count()


def seq(prompt: list[int]) -> Sequence:
    return Sequence(next(ids), list(prompt), len(prompt), SamplingParams())


def step(scheduler: Scheduler, token: int = 7):
    """One engine step: schedule, then report `token` for every sampled sequence."""
    batch = scheduler.schedule()
    scheduler.postprocess(batch, [[[token] for _ in group] for group in batch.samples])
    scheduler.cache.check_integrity(s.block_table for s in scheduler.running)
    return batch


def test_long_prompt_is_prefilled_in_chunks_while_others_decode():
    scheduler = Scheduler(num_blocks=64, block_size=4, max_num_seqs=8, max_num_batched_tokens=10)
    short, long = seq(range(3)), seq(range(100, 130))
    scheduler.add([short])
    step(scheduler)  # short prefilled, has sampled its first token
    scheduler.add([long])
    chunk_sizes = []
    while long.num_computed_tokens < long.num_prompt_tokens:
        batch = step(scheduler)
        assert batch.chunks[0].seq is short and batch.chunks[0].num_tokens == 1  # decode first
        chunk_sizes.append(batch.chunks[1].num_tokens)
    assert chunk_sizes == [9, 9, 9, 3]
    assert long.num_tokens == 31  # its first token came with the last chunk


def test_admission_reuses_cached_blocks_but_computes_the_last_token():
    scheduler = Scheduler(num_blocks=16, block_size=4, max_num_seqs=4, max_num_batched_tokens=64)
    first = seq(range(12))
    scheduler.add([first])
    step(scheduler)
    scheduler.finish(first)
    again = seq(range(12))  # the same prompt: 3 full cached blocks, but one token must run
    scheduler.add([again])
    batch = step(scheduler)
    assert again.num_cached_tokens == 8 and batch.chunks[0].num_tokens == 4
    longer = seq(list(range(12)) + [50, 51])
    scheduler.add([longer])
    batch = step(scheduler)
    assert longer.num_cached_tokens == 12 and batch.chunks[-1].num_tokens == 2
    assert scheduler.stats.prefix_hit_tokens == 20


def test_preemption_when_blocks_run_out_then_everything_finishes_and_frees():
    scheduler = Scheduler(num_blocks=10, block_size=4, max_num_seqs=8, max_num_batched_tokens=64)
    seqs = [seq(range(i * 10, i * 10 + 8)) for i in range(4)]
    for s in seqs:
        scheduler.add([s])
    for _ in range(200):
        if not scheduler.has_work:
            break
        step(scheduler)
        for s in list(scheduler.running):
            if len(s.output_ids) >= 12:
                scheduler.finish(s)
    assert not scheduler.has_work
    assert all(s.status is Status.FINISHED and len(s.output_ids) == 12 for s in seqs)
    assert scheduler.stats.preemptions > 0
    assert scheduler.cache.num_available == 10
    assert scheduler.cache.stats()["blocks_in_use"] == 0


def test_samples_fork_from_the_leader_sharing_full_blocks_and_copying_the_last():
    scheduler = Scheduler(num_blocks=16, block_size=4, max_num_seqs=8, max_num_batched_tokens=64)
    group = [seq(range(10)) for _ in range(3)]
    scheduler.add(group)
    assert [s.status for s in group] == [Status.WAITING, Status.PARKED, Status.PARKED]
    batch = scheduler.schedule()
    assert len(batch.chunks) == 1 and batch.samples == [group]  # one prefill, three samples
    scheduler.postprocess(batch, [[[1], [2], [3]]])
    leader, *siblings = group
    assert [s.token_ids[-1] for s in group] == [1, 2, 3]
    for sibling in siblings:
        assert sibling.block_table[:2] == leader.block_table[:2]  # full blocks shared
        assert sibling.block_table[2] != leader.block_table[2]  # partial block copied
        assert sibling.num_computed_tokens == 10 and sibling.num_cached_tokens == 10
    batch = step(scheduler)
    assert sorted(batch.copies) == sorted(
        (leader.block_table[2], s.block_table[2]) for s in siblings
    )
    assert [c.num_tokens for c in batch.chunks] == [1, 1, 1]
    assert scheduler.stats.computed_tokens == 10 + 3


def test_the_samples_of_a_request_count_against_max_num_seqs():
    scheduler = Scheduler(num_blocks=64, block_size=4, max_num_seqs=4, max_num_batched_tokens=64)
    first = [seq(range(6)) for _ in range(3)]  # one request, n=3
    second = [seq(range(10, 16)) for _ in range(3)]
    scheduler.add(first)
    scheduler.add(second)
    for _ in range(3):
        step(scheduler)
        assert len(scheduler.running) == 3 and len(scheduler.waiting) == 1
    for s in first:
        scheduler.finish(s)
    step(scheduler)  # slots are free: the second request is admitted and forks
    step(scheduler)
    assert len(scheduler.running) == 3 and not scheduler.waiting
    # A request larger than the limit still runs, alone.
    for s in second:
        scheduler.finish(s)
    scheduler.add([seq(range(20, 26)) for _ in range(6)])
    step(scheduler)
    assert len(scheduler.running) == 6


def test_abort_releases_blocks_at_once_wherever_the_sequence_is():
    scheduler = Scheduler(num_blocks=8, block_size=4, max_num_seqs=1, max_num_batched_tokens=64)
    running, waiting = seq(range(10)), seq(range(20, 30))
    group = [running, seq(range(10))]
    scheduler.add(group)
    scheduler.add([waiting])
    step(scheduler)
    scheduler.abort([waiting])
    scheduler.abort(group)
    assert not scheduler.has_work and not scheduler.parked
    assert scheduler.cache.stats()["blocks_in_use"] == 0
    scheduler.cache.check_integrity([])
