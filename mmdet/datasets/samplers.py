"""Samplers: aspect-ratio grouped shuffling for training, rank-interleaved order for distributed testing."""

import math
from collections.abc import Iterator, Sequence
from typing import Optional

import numpy as np
from torch.utils.data import Sampler


def _group_flags(dataset) -> np.ndarray:
    flag = getattr(dataset, "flag", None)
    if flag is None:
        return np.zeros(len(dataset), dtype=np.uint8)
    return np.asarray(flag)


def _padded_group_chunks(flag: np.ndarray, chunk: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle each group, extend it (by random repeats) to a multiple of `chunk`, cut it into chunks of `chunk`."""
    chunks = []
    for group in np.unique(flag):
        indices = np.flatnonzero(flag == group)
        rng.shuffle(indices)
        extra = (-len(indices)) % chunk
        if extra:
            indices = np.concatenate([indices, rng.choice(indices, extra, replace=extra > len(indices))])
        chunks.extend(np.split(indices, len(indices) // chunk))
    return chunks


class GroupSampler(Sampler):
    """Single-process training sampler: every batch of `samples_per_gpu` images comes from one aspect group.

    With a `seed`, the order of epoch e is a function of (seed, e) (call `set_epoch`); without one it uses
    numpy's global RNG, as mmdetection does.
    """

    def __init__(self, dataset, samples_per_gpu: int = 1, seed: Optional[int] = None):
        self.flag = _group_flags(dataset)
        self.samples_per_gpu = samples_per_gpu
        self.seed = seed
        self.epoch = 0
        sizes = np.bincount(self.flag.astype(np.int64))
        self.num_samples = int(sum(math.ceil(size / samples_per_gpu) * samples_per_gpu for size in sizes if size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(np.random.randint(0, 2**31 - 1))
        return np.random.default_rng((self.seed, self.epoch))

    def __iter__(self) -> Iterator[int]:
        rng = self._rng()
        chunks = _padded_group_chunks(self.flag, self.samples_per_gpu, rng)
        order = rng.permutation(len(chunks))
        return iter(int(i) for c in order for i in chunks[c])

    def __len__(self) -> int:
        return self.num_samples


class DistributedGroupSampler(Sampler):
    """Distributed training sampler: each rank gets whole batches from one aspect group.

    All ranks draw the same permutation from (seed, epoch), so `set_epoch` must be called with the same
    epoch on every rank; rank r takes every world_size-th batch starting at r.
    """

    def __init__(self, dataset, samples_per_gpu: int, num_replicas: int, rank: int, seed: Optional[int] = None):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.flag = _group_flags(dataset)
        self.samples_per_gpu = samples_per_gpu
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = 0 if seed is None else seed
        self.epoch = 0
        per_step = samples_per_gpu * num_replicas
        sizes = np.bincount(self.flag.astype(np.int64))
        total = sum(math.ceil(size / per_step) * per_step for size in sizes if size)
        self.num_samples = int(total // num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        chunks = _padded_group_chunks(self.flag, self.samples_per_gpu * self.num_replicas, rng)
        batches = [part for chunk in chunks for part in np.split(chunk, self.num_replicas)]
        order = rng.permutation(len(batches))
        mine = [batches[b] for b in order[self.rank :: self.num_replicas]]
        return iter(int(i) for batch in mine for i in batch)

    def __len__(self) -> int:
        return self.num_samples


def interleaved_indices(size: int, num_replicas: int, rank: int) -> list[int]:
    """Indices rank `rank` evaluates: k with k mod num_replicas == rank, after padding the index list by
    repeating its first entries up to a multiple of num_replicas (every rank gets the same count)."""
    if size <= 0:
        raise ValueError("cannot shard an empty dataset")
    total = math.ceil(size / num_replicas) * num_replicas
    padded = [k % size for k in range(total)]
    return padded[rank::num_replicas]


def interleave_shards(shards: Sequence[Sequence], size: int) -> list:
    """Inverse of `interleaved_indices`: merge per-rank result lists back into dataset order, drop the padding."""
    lengths = {len(shard) for shard in shards}
    if len(lengths) != 1:
        raise ValueError(f"per-rank result lists differ in length: {[len(s) for s in shards]}")
    merged = [item for group in zip(*shards) for item in group]
    if len(merged) < size:
        raise ValueError(f"gathered {len(merged)} results for a dataset of {size} images")
    return merged[:size]


class DistributedTestSampler(Sampler):
    """Test sampler: image k goes to rank k mod world_size, so results can be re-interleaved."""

    def __init__(self, dataset, num_replicas: int, rank: int):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.indices = interleaved_indices(len(dataset), num_replicas, rank)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
