"""The stream of training batches for one process: single-bucket batches in a (seed, epoch) order.

The stream can start at any global step, so a resumed run sees exactly the batches an uninterrupted run
would have seen from that step on. One DataLoader serves the whole run: each batch request carries its epoch,
so loader workers start once, not at every epoch (a GPU-sized run has hundreds of short epochs).
"""
from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from pixart.train.buckets import AspectRatioBatchSampler
from pixart.train.data import DatasetError, LatentDataset


def epoch_batches(dataset: LatentDataset, recipe: dict, *, rank: int = 0, world_size: int = 1,
                  start_step: int = 0) -> Iterator[dict]:
    """Endless collated batches (keys of LatentDataset items, stacked) from global step `start_step` on.
    Multi-scale training drops each bucket's short last batch, as the original's AspectRatioBatchSampler
    (drop_last=True) does."""
    sampler = AspectRatioBatchSampler(dataset.bucket_keys, recipe["batch_size"], seed=recipe["seed"],
                                      drop_last=bool(dataset.settings["multiscale"]), rank=rank,
                                      world_size=world_size)
    per_epoch = len(sampler)
    if not dataset.settings["multiscale"] and sampler.largest_bucket < recipe["batch_size"] * world_size:
        # every batch would be the whole (short) dataset, recorded and lr-scaled as a full batch
        raise DatasetError(
            f"{recipe['features']}: {sampler.largest_bucket} items, fewer than batch_size {recipe['batch_size']} x "
            f"{world_size} process(es); lower batch_size or add data")
    if per_epoch == 0:
        raise DatasetError(
            f"{recipe['features']}: no batch to train on: the largest bucket holds {sampler.largest_bucket} items, "
            f"fewer than batch_size {recipe['batch_size']} x {world_size} process(es)"
            + (f" ({sampler.n_dropped} items fit no bucket)" if sampler.n_dropped else "")
            + "; lower batch_size or add data")
    if sampler.never_batched and rank == 0:  # upstream drops them too (drop_last); say so rather than stay silent
        print(f"multi-scale: {sum(sampler.never_batched.values())} items in buckets smaller than batch_size "
              f"{recipe['batch_size']} are never trained on: " + ", ".join(
                  f"{key} ({n})" for key, n in sampler.never_batched.items()), flush=True)
    return _stream(dataset, sampler, recipe["num_workers"], *divmod(start_step, per_epoch))


class _EpochBatches(Sampler):
    """Endless (epoch, item indices) requests, from batch `skip` of `epoch` on."""

    def __init__(self, sampler: AspectRatioBatchSampler, epoch: int, skip: int):
        self.sampler, self.epoch, self.skip = sampler, epoch, skip

    def __iter__(self):
        epoch, skip = self.epoch, self.skip
        while True:
            self.sampler.set_epoch(epoch)
            for indices in list(self.sampler)[skip:]:
                yield epoch, indices
            epoch, skip = epoch + 1, 0


class _BatchReader(Dataset):
    """Collates the items of one (epoch, indices) request, in whichever process reads it."""

    def __init__(self, dataset: LatentDataset):
        self.dataset = dataset

    def __getitem__(self, request: tuple[int, list[int]]) -> dict:
        epoch, indices = request
        return default_collate([self.dataset.item(i, epoch) for i in indices])


def _stream(dataset: LatentDataset, sampler: AspectRatioBatchSampler, num_workers: int, epoch: int,
            skip: int) -> Iterator[dict]:
    """A generator apart from epoch_batches, whose checks then run when it is called, not at the first batch."""
    yield from DataLoader(_BatchReader(dataset), sampler=_EpochBatches(sampler, epoch, skip), batch_size=None,
                          num_workers=num_workers)
