"""Training batch loading speed: the suite's stream (pixart.train.batches) against a plain DataLoader per epoch.

`python -m pixart.train.loader_bench --features DIR [--batch-size 256] [--epochs 5] [--workers 0 2] [--repeats 5]`

Per setting: milliseconds per batch over whole epochs (the epoch starts included), median of --repeats, and the
time to build the dataset (where preloading reads every feature file). The plain loader is what a user would
otherwise write: `DataLoader(dataset, batch_sampler=…, num_workers=N)` anew each epoch, after set_epoch.
"""
import argparse
import statistics
import time
from itertools import islice

import torch
from torch.utils.data import DataLoader

from pixart.train.batches import epoch_batches
from pixart.train.buckets import AspectRatioBatchSampler
from pixart.train.data import LatentDataset


def _sampler(dataset: LatentDataset, batch_size: int, seed: int = 0) -> AspectRatioBatchSampler:
    # as epoch_batches builds it: multi-scale training drops each bucket's short last batch
    return AspectRatioBatchSampler(dataset.bucket_keys, batch_size, seed=seed,
                                   drop_last=bool(dataset.settings["multiscale"]))


def plain_batches(dataset: LatentDataset, batch_size: int, workers: int = 0, seed: int = 0):
    """Endless batches the way a user would load them: a DataLoader over the dataset anew each epoch, after
    set_epoch. The benchmark's baseline, and the reference the tests hold the suite's stream to."""
    sampler = _sampler(dataset, batch_size, seed)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        yield from DataLoader(dataset, batch_sampler=list(sampler), num_workers=workers)
        epoch += 1


def measure(features: str, loader: str, *, batch_size: int, epochs: int, workers: int, preload: bool) -> tuple[float, float]:
    """(ms per batch, seconds to build the dataset) for one pass of `epochs` epochs."""
    tick = time.perf_counter()
    dataset = LatentDataset(features)
    if preload:
        dataset.preload()
    built = time.perf_counter() - tick
    per_epoch = len(_sampler(dataset, batch_size))
    recipe = {"batch_size": batch_size, "seed": 0, "features": features, "num_workers": workers}
    stream = plain_batches(dataset, batch_size, workers) if loader == "plain" else epoch_batches(dataset, recipe)
    tick = time.perf_counter()
    n = sum(1 for _ in islice(stream, per_epoch * epochs))
    return (time.perf_counter() - tick) / n * 1e3, built


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True, help="a folder written by python -m pixart.train.features")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| loader | workers | preload | ms per batch | dataset built (s) |\n|---|---|---|---|---|")
    settings = [("plain", w, False) for w in args.workers] + [("suite", w, p) for p in (False, True) for w in args.workers]
    for loader, workers, preload in settings:
        runs = [measure(args.features, loader, batch_size=args.batch_size, epochs=args.epochs, workers=workers,
                        preload=preload) for _ in range(args.repeats)]
        print(f"| {loader} | {workers} | {'yes' if preload else 'no'} | {statistics.median(r[0] for r in runs):.1f} "
              f"| {statistics.median(r[1] for r in runs):.2f} |", flush=True)


if __name__ == "__main__":
    main()
