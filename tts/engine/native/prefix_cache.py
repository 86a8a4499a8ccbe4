"""The prefix cache: full KV blocks found again by the tokens that led to them.

Contract:
- A full block is keyed by (hash of its parent block's key, its own tokens), so a key stands
  for the whole token prefix up to the block's end: two sequences share a block only if they
  agree on every token before it. (Parent hashes are Python's 64-bit tuple hashes, as in vLLM's
  default; a collision needs two different prefixes with equal hashes.)
- `match` returns the longest run of cached blocks that starts a token sequence and takes one
  reference on each; `allocate` returns fresh blocks, evicting the least recently released
  cached blocks only when no free block is left; `release` drops references.
- Only full blocks whose KV has been computed are registered, so a matched block is ready to
  attend to. A block stays findable until it is evicted.
- `check_integrity` verifies that free + cached + in use = total and that every reference
  count equals the number of block tables that hold the block.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tts.engine.native.block_pool import BlockPool

ROOT_HASH = 0  # the parent hash of a sequence's first block


def block_key(parent_hash: int, tokens: Iterable[int]) -> tuple[int, tuple[int, ...]]:
    return (parent_hash, tuple(tokens))


class PrefixCache:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.index: dict[tuple[int, tuple[int, ...]], int] = {}  # key -> block id

    @property
    def num_available(self) -> int:
        return self.pool.num_available

    def match(self, token_ids: list[int], max_blocks: int) -> tuple[list[int], list[int]]:
        """The cached blocks that start `token_ids` (at most `max_blocks`), referenced once more,
        and their key hashes (the parent hashes for the blocks that follow)."""
        block_ids, hashes, parent = [], [], ROOT_HASH
        for start in range(0, max_blocks * self.block_size, self.block_size):
            key = block_key(parent, token_ids[start : start + self.block_size])
            block_id = self.index.get(key)
            if block_id is None:
                break
            self.pool.acquire(self.pool.blocks[block_id])
            block_ids.append(block_id)
            parent = hash(key)
            hashes.append(parent)
        return block_ids, hashes

    def allocate(self, count: int) -> list[int] | None:
        """`count` fresh blocks, or None (and nothing taken) if the pool cannot give that many."""
        if count > self.pool.num_available:
            return None
        blocks = [self.pool.take() for _ in range(count)]
        for block in blocks:
            if block.key is not None:  # evicted: forget where it was found
                del self.index[block.key]
                block.key = None
        return [block.block_id for block in blocks]

    def register(self, block_id: int, parent_hash: int, tokens: list[int]) -> int:
        """Make a just-filled block findable; return its hash (the next block's parent hash).

        If another block already holds this prefix (two sequences computed it at once), that
        one stays the cached copy and this block is freed normally when released.
        """
        if len(tokens) != self.block_size:
            raise ValueError(f"only full blocks are cached ({len(tokens)} tokens given)")
        key = block_key(parent_hash, tokens)
        if key not in self.index:
            self.index[key] = block_id
            self.pool.blocks[block_id].key = key
        return hash(key)

    def release(self, block_ids: list[int]) -> None:
        """Drop one reference on each block, last block first, so that when they go unused the
        tail of a sequence is evicted before the prefix it shares with others."""
        for block_id in reversed(block_ids):
            self.pool.release(self.pool.blocks[block_id])

    def forget_all(self) -> None:
        """Drop every cached block (the weights that computed their KV have changed); only when
        no block is in use."""
        if any(block.ref_count for block in self.pool.blocks):
            raise RuntimeError("the prefix cache cannot be dropped while blocks are in use")
        for block_id in list(self.pool.evictable):
            self.pool.blocks[block_id].key = None
            self.pool.free.append(block_id)
        self.pool.evictable.clear()
        self.index.clear()

    def check_integrity(self, block_tables: Iterable[list[int]]) -> None:
        """Raise AssertionError if the pool's bookkeeping disagrees with the block tables."""
        pool = self.pool
        refs = Counter(block_id for table in block_tables for block_id in table)
        in_use = {b.block_id for b in pool.blocks if b.ref_count > 0}
        free, cached = set(pool.free), set(pool.evictable)
        assert len(free) == len(pool.free), "a block is twice on the free list"
        assert not (free & cached) and not (free & in_use) and not (cached & in_use), (
            "a block is in two states"
        )
        assert len(free) + len(cached) + len(in_use) == pool.num_blocks, (
            f"free {len(free)} + cached {len(cached)} + in use {len(in_use)} "
            f"!= total {pool.num_blocks}"
        )
        for block in pool.blocks:
            assert block.ref_count == refs.get(block.block_id, 0), (
                f"block {block.block_id}: ref_count {block.ref_count}, "
                f"in {refs.get(block.block_id, 0)} block tables"
            )
            if block.key is not None:
                assert self.index.get(block.key) == block.block_id, (
                    f"block {block.block_id} has a key the index does not map to it"
                )
        for block_id in cached:
            assert pool.blocks[block_id].key is not None, f"cached block {block_id} has no key"
        for key, block_id in self.index.items():
            assert pool.blocks[block_id].key == key, f"index maps to block {block_id} wrongly"

    def stats(self) -> dict[str, int]:
        pool = self.pool
        return {
            "blocks_total": pool.num_blocks,
            "blocks_free": len(pool.free),
            "blocks_cached": len(pool.evictable),
            "blocks_in_use": pool.num_blocks - len(pool.free) - len(pool.evictable),
        }
