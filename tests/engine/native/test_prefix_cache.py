"""The block pool and the prefix cache on their own: plain Python, no model."""

import pytest

from tts.engine.native.prefix_cache import ROOT_HASH, PrefixCache


def fill(cache: PrefixCache, tokens: list[int]) -> tuple[list[int], list[int]]:
    """Allocate and register blocks for `tokens` (a whole number of blocks), as a sequence
    whose KV has just been computed would."""
    size = cache.block_size
    blocks = cache.allocate(len(tokens) // size)
    hashes, parent = [], ROOT_HASH
    for i, block_id in enumerate(blocks):
        parent = cache.register(block_id, parent, tokens[i * size : (i + 1) * size])
        hashes.append(parent)
    return blocks, hashes


def test_match_finds_the_longest_cached_prefix_and_references_it():
    cache = PrefixCache(num_blocks=8, block_size=4)
    blocks, hashes = fill(cache, list(range(12)))
    matched, matched_hashes = cache.match(list(range(10)) + [99, 98, 97, 96], max_blocks=3)
    assert matched == blocks[:2] and matched_hashes == hashes[:2]
    assert [cache.pool.blocks[b].ref_count for b in blocks] == [2, 2, 1]
    cache.check_integrity([blocks, matched])


def test_a_block_is_found_only_after_the_same_whole_prefix():
    cache = PrefixCache(num_blocks=8, block_size=4)
    fill(cache, [1, 2, 3, 4, 5, 6, 7, 8])
    # The second block's tokens alone, after another first block, must not match.
    assert cache.match([9, 9, 9, 9, 5, 6, 7, 8], max_blocks=2)[0] == []


def test_max_blocks_limits_the_match():
    cache = PrefixCache(num_blocks=8, block_size=4)
    fill(cache, list(range(8)))
    assert len(cache.match(list(range(8)), max_blocks=1)[0]) == 1


def test_released_blocks_stay_findable_until_evicted_least_recently_used_first():
    cache = PrefixCache(num_blocks=4, block_size=2)
    old, _ = fill(cache, [1, 1, 2, 2])
    new, _ = fill(cache, [3, 3, 4, 4])
    cache.release(old)
    cache.release(new)
    assert cache.num_available == 4 and cache.stats()["blocks_cached"] == 4
    assert len(cache.match([1, 1, 2, 2], max_blocks=2)[0]) == 2  # still cached
    cache.release(cache.match([1, 1, 2, 2], max_blocks=2)[0])
    # Two fresh blocks must evict: the least recently released go first. Release order was
    # old (tail first), new (tail first), then old again: new's blocks are now the oldest.
    cache.allocate(2)
    assert cache.match([3, 3, 4, 4], max_blocks=2)[0] == []
    assert len(cache.match([1, 1, 2, 2], max_blocks=2)[0]) == 2


def test_allocation_beyond_the_pool_takes_nothing():
    cache = PrefixCache(num_blocks=3, block_size=2)
    held = cache.allocate(2)
    assert cache.allocate(2) is None
    assert cache.num_available == 1
    cache.check_integrity([held])


def test_duplicate_registration_keeps_the_first_copy():
    cache = PrefixCache(num_blocks=4, block_size=2)
    first, hashes = fill(cache, [5, 6])
    second, second_hashes = fill(cache, [5, 6])
    assert hashes == second_hashes
    cache.release(second)
    assert cache.stats()["blocks_free"] == 3  # the duplicate is simply free
    assert cache.match([5, 6, 7], max_blocks=1)[0] == first


def test_integrity_check_catches_a_leak_and_a_wrong_count():
    cache = PrefixCache(num_blocks=4, block_size=2)
    blocks, _ = fill(cache, [1, 2, 3, 4])
    with pytest.raises(AssertionError, match="ref_count"):
        cache.check_integrity([])  # a block table was forgotten: its blocks leak
    cache.pool.blocks[blocks[0]].ref_count = 2
    with pytest.raises(AssertionError, match="ref_count 2"):
        cache.check_integrity([blocks])


def test_double_release_is_an_error():
    cache = PrefixCache(num_blocks=2, block_size=2)
    blocks = cache.allocate(1)
    cache.release(blocks)
    with pytest.raises(RuntimeError, match="released more often"):
        cache.release(blocks)
