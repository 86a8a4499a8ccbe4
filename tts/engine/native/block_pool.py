"""A fixed pool of KV-cache blocks with reference counts, a free list and LRU eviction.

A block is in exactly one of three states:
- in use: referenced by at least one sequence's block table (ref_count > 0);
- cached: unreferenced but holding a full block the prefix cache can still hand out, kept in
  least-recently-released order and reclaimed only when the free list is empty;
- free: unreferenced and holding nothing anyone can find.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    key: tuple[int, tuple[int, ...]] | None = None  # (parent hash, tokens) once cached


class BlockPool:
    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: deque[int] = deque(range(num_blocks))
        self.evictable: OrderedDict[int, None] = OrderedDict()  # oldest release first

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_available(self) -> int:
        """Blocks an allocation can take: free ones plus cached ones it may evict."""
        return len(self.free) + len(self.evictable)

    def take(self) -> Block:
        """An unreferenced block with ref_count 1. The caller first drops an evicted block's key
        from its index: `take` returns a block whose `key` is still set when it evicted one."""
        if self.free:
            block = self.blocks[self.free.popleft()]
        elif self.evictable:
            block_id, _ = self.evictable.popitem(last=False)
            block = self.blocks[block_id]
        else:
            raise RuntimeError("no KV block available; check num_available first")
        block.ref_count = 1
        return block

    def acquire(self, block: Block) -> None:
        """One more reference to a block (a prefix-cache hit)."""
        if block.ref_count == 0:
            del self.evictable[block.block_id]
        block.ref_count += 1

    def release(self, block: Block) -> None:
        """One reference fewer; an unreferenced block becomes cached (if keyed) or free."""
        if block.ref_count <= 0:
            raise RuntimeError(f"block {block.block_id} released more often than acquired")
        block.ref_count -= 1
        if block.ref_count == 0:
            if block.key is not None:
                self.evictable[block.block_id] = None
            else:
                self.free.append(block.block_id)
