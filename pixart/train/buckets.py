"""The 40 aspect-ratio buckets of PixArt-α and a batch sampler that draws every batch from one bucket.

Tables follow `diffusion/data/datasets/utils.py` of PixArt-alpha: key = h/w as a string, value = [h, w].
The 1024 sizes are multiples of 64 with ≈1 MPix; 512 = ½ and 256 = ¼ of them. diffusers' `ASPECT_RATIO_*_BIN`
tables are these without the keys 0.26, 0.27, 2.89, 3.11, 3.62, 3.75, 3.88.
"""
import hashlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

ASPECT_RATIO_1024 = {
    "0.25": [512, 2048], "0.26": [512, 1984], "0.27": [512, 1920], "0.28": [512, 1856],
    "0.32": [576, 1792], "0.33": [576, 1728], "0.35": [576, 1664], "0.4": [640, 1600],
    "0.42": [640, 1536], "0.48": [704, 1472], "0.5": [704, 1408], "0.52": [704, 1344],
    "0.57": [768, 1344], "0.6": [768, 1280], "0.68": [832, 1216], "0.72": [832, 1152],
    "0.78": [896, 1152], "0.82": [896, 1088], "0.88": [960, 1088], "0.94": [960, 1024],
    "1.0": [1024, 1024], "1.07": [1024, 960], "1.13": [1088, 960], "1.21": [1088, 896],
    "1.29": [1152, 896], "1.38": [1152, 832], "1.46": [1216, 832], "1.67": [1280, 768],
    "1.75": [1344, 768], "2.0": [1408, 704], "2.09": [1472, 704], "2.4": [1536, 640],
    "2.5": [1600, 640], "2.89": [1664, 576], "3.0": [1728, 576], "3.11": [1792, 576],
    "3.62": [1856, 512], "3.75": [1920, 512], "3.88": [1984, 512], "4.0": [2048, 512],
}
ASPECT_RATIO_512 = {key: [h // 2, w // 2] for key, (h, w) in ASPECT_RATIO_1024.items()}
ASPECT_RATIO_256 = {key: [h // 4, w // 4] for key, (h, w) in ASPECT_RATIO_1024.items()}
MAX_RATIO = 4.0


def buckets_for(resolution: int, multiple: int = 16) -> dict[str, list[int]]:
    """The 1024 table scaled to `resolution`, each side rounded to a multiple of `multiple` (≥ one multiple)."""
    def side(x: int) -> int:
        return max(multiple, multiple * math.floor(x * resolution / 1024 / multiple + 0.5))

    return {key: [side(h), side(w)] for key, (h, w) in ASPECT_RATIO_1024.items()}


def nearest_bucket(height: float, width: float, table: dict = ASPECT_RATIO_1024) -> str:
    """Key of the bucket whose ratio is closest to height/width (the first one on a tie, as upstream)."""
    ratio = height / width
    return min(table, key=lambda key: abs(float(key) - ratio))


def assign_buckets(sizes: Sequence[tuple[int, int]], table: dict = ASPECT_RATIO_1024,
                   max_ratio: float = MAX_RATIO) -> list[str | None]:
    """Bucket key per (h, w); None where either side is over max_ratio times the other (dropped)."""
    return [None if max(h / w, w / h) > max_ratio else nearest_bucket(h, w, table) for h, w in sizes]


def stable_seed(*parts) -> int:
    """A 64-bit seed from any parts, stable across processes and Python runs (unlike hash())."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little")


class AspectRatioBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices, each from one bucket; shuffled per (seed, epoch); sharded by rank.

    `buckets` holds a key per item (None = dropped), or (h, w) per item together with `table`, in which case
    items beyond `max_ratio` are dropped and counted in `n_dropped`. Every rank gets the same number of
    batches: with drop_last the batch list is cut to a multiple of world_size, without it the first batches
    are repeated to fill the last round, so that the ranks' union covers every kept item.
    """

    def __init__(self, buckets: Sequence, batch_size: int, *, table: dict | None = None, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 max_ratio: float = MAX_RATIO):
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        keys = list(buckets)
        if keys and not all(k is None or isinstance(k, str) for k in keys):
            if table is None:
                raise ValueError("AspectRatioBatchSampler got (h, w) sizes: pass table=… to map them to buckets")
            keys = assign_buckets(keys, table, max_ratio)
        self.keys = keys
        self.n_dropped = sum(k is None for k in keys)
        self.batch_size, self.seed, self.shuffle, self.drop_last = batch_size, seed, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        counts: dict[str, int] = {}
        for key in keys:
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        per_bucket = (n // batch_size if drop_last else math.ceil(n / batch_size) for n in counts.values())
        self._n_batches = sum(per_bucket)
        # with drop_last, a bucket of fewer items than a batch is never trained on, in any epoch
        self.never_batched = {key: n for key, n in sorted(counts.items()) if drop_last and n < batch_size}
        self.largest_bucket = max(counts.values(), default=0)

    def set_epoch(self, epoch: int):
        """Select the epoch whose shuffle the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self._n_batches // self.world_size
        return math.ceil(self._n_batches / self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(stable_seed("batches", self.seed, self.epoch))
        n = len(self.keys)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else range(n)
        groups: dict[str, list[int]] = {}
        for index in order:
            if self.keys[index] is not None:
                groups.setdefault(self.keys[index], []).append(index)
        batches = []
        for key in sorted(groups):
            members = groups[key]
            for start in range(0, len(members), self.batch_size):
                batch = members[start:start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        rounds = len(self)
        if self.drop_last:
            batches = batches[:rounds * self.world_size]
        elif batches:
            batches += [batches[i % len(batches)] for i in range(rounds * self.world_size - len(batches))]
        yield from batches[self.rank::self.world_size]
