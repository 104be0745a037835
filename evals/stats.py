"""Seeded bootstrap statistics: confidence intervals for aggregates and paired differences between models.

Every aggregate in the suite carries a percentile-bootstrap CI. When scores come in groups (several images
per prompt), the prompt is the sampling unit: whole groups are resampled with replacement (cluster bootstrap),
because images of one prompt are correlated and resampling them one by one would understate the spread.
Resampling is vectorised in chunks of resamples so that memory stays bounded for 30K-item benchmarks.
"""
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

# Elements of one chunk of resampled indices (n_resamples x width): ~16 MB of int64.
CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class CI:
    """A point estimate with its percentile-bootstrap interval and everything needed to reproduce it."""
    value: float
    low: float
    high: float
    n: int
    level: float
    n_resamples: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedResult:
    """diff = mean(b) - mean(a) with its bootstrap CI and two-sided p-value (see `paired_bootstrap`)."""
    diff: float
    low: float
    high: float
    p_value: float
    n: int
    level: float = 0.95
    n_resamples: int = 1000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(scores, groups=None, *, statistic: Callable = np.mean, n_resamples: int = 1000,
                 level: float = 0.95, seed: int = 0) -> CI:
    """Percentile-bootstrap CI of `statistic` over `scores`.

    `statistic(x, axis=-1)` must reduce along `axis` like numpy reductions do (np.mean, np.median, ...).
    `groups` (one id per score, e.g. the prompt id) switches to the cluster bootstrap: groups are drawn with
    replacement and every score of a drawn group comes along; the value is `statistic` over all scores.
    Fewer than two items (groups) are refused: every resample would repeat the value, a CI of width 0.
    """
    scores = _as_scores(scores, "scores")
    _check_level(level, n_resamples)
    ids = _group_index(groups, len(scores))
    units = len(scores) if ids is None else int(ids.max()) + 1
    if units < 2:
        raise ValueError(f"a bootstrap CI needs at least 2 {'items' if groups is None else 'groups (prompts)'}, got "
                         f"{units}: with one, every resample repeats it and the interval would claim certainty.")
    rng = np.random.default_rng(seed)
    value = float(statistic(scores, axis=-1))
    boot = _resampled_statistic(scores, ids, statistic, n_resamples, rng)
    low, high = _percentiles(boot, level)
    return CI(value, low, high, len(scores), level, n_resamples, seed)


def stratified_mean_ci(scores, strata, groups, weights: dict | None = None, *, n_resamples: int = 1000,
                       level: float = 0.95, seed: int = 0) -> CI:
    """CI of a weighted mean of stratum means (WISE's Overall, GenEval's mean of task scores).

    Within each stratum (category) whole groups (prompts) are drawn with replacement, as many as it has: the
    protocol fixes how many prompts each category has, so every resample keeps every category and the
    headline keeps its definition. A stratum of n groups resampled n at a time has (n−1)/n of its mean's
    variance, a shortfall set by the stratum's size rather than the whole sample's; so each stratum's replicates
    are spread about its mean by sqrt(n/(n−1)) (rescaled bootstrap), and a stratum of one group is refused.
    The stretch can carry a replicate past its stratum's data (a GenEval task of 3 prompts that scored 0 on 2:
    below 0), which no resample's mean can reach; replicates are clipped to the stratum's least and greatest
    score, so a fraction's interval stays within [0, 1].
    `weights`: stratum → weight (equal when None); it must name every stratum.
    """
    scores = _as_scores(scores, "scores")
    strata, groups = np.asarray(strata, dtype=object), np.asarray(groups)
    if strata.shape != scores.shape or groups.shape != scores.shape:
        raise ValueError(f"strata and groups: expected one per score ({len(scores)}), got shapes "
                         f"{strata.shape} and {groups.shape}.")
    pairs = set(zip(groups.tolist(), strata.tolist()))
    if len({g for g, _ in pairs}) < len(pairs):
        shared = sorted({g for g, _ in pairs if sum(h == g for h, _ in pairs) > 1}, key=str)
        raise ValueError(f"groups span several strata (e.g. {shared[:3]}): each prompt belongs to one category.")
    names = sorted(set(strata.tolist()))
    if weights is not None and set(weights) != set(names):
        raise ValueError(f"weights name {sorted(weights)} but the strata are {names}.")
    w = np.array([float(weights[n]) if weights else 1.0 for n in names])
    _check_level(level, n_resamples)
    rng = np.random.default_rng(seed)
    value = boot = 0.0
    for weight, name in zip(w, names):
        mask = strata == name
        stratum = scores[mask]
        ids = _group_index(groups[mask], len(stratum))
        n_groups = int(ids.max()) + 1
        if n_groups < 2:
            raise ValueError(f"stratum {name!r} has one group (prompt): its mean has no spread to resample.")
        mean = float(stratum.mean())
        replicates = _resampled_statistic(stratum, ids, np.mean, n_resamples, rng)
        value += weight * mean
        stretched = mean + np.sqrt(n_groups / (n_groups - 1)) * (replicates - mean)
        boot = boot + weight * np.clip(stretched, stratum.min(), stratum.max())
    low, high = _percentiles(boot / w.sum(), level)
    return CI(value / w.sum(), low, high, len(scores), level, n_resamples, seed)


def paired_bootstrap(a, b, groups=None, *, n_resamples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> PairedResult:
    """Difference of means between two aligned runs (same items, two models): diff = mean(b) - mean(a).

    Items (or whole groups, when `groups` is given) are resampled jointly, so each resample keeps the pairing.
    p-value (two-sided, null-centred bootstrap): with d* the R bootstrap differences and d the observed one,
        p = (1 + #{r : |d*_r - d| >= |d|}) / (R + 1),
    i.e. how often the bootstrap distribution shifted to mean zero lands at least as far from zero as d.
    The +1 keeps p > 0 (the smallest reportable p is 1/(R+1)). Like any percentile bootstrap it is slightly
    liberal on small samples (simulated: 6% false alarms at p < 0.05 with 60 items); report n with p.
    """
    a, b = _as_scores(a, "a"), _as_scores(b, "b")
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap needs aligned runs: len(a)={len(a)} but len(b)={len(b)}. "
                         f"Pair the scores item by item (same prompts and seeds) before comparing.")
    _check_level(level, n_resamples)
    rng = np.random.default_rng(seed)
    deltas = b - a  # mean(b) - mean(a) == mean(b - a) for any resample of aligned items
    diff = float(deltas.mean())
    boot = _resampled_statistic(deltas, _group_index(groups, len(deltas)), np.mean, n_resamples, rng)
    low, high = _percentiles(boot, level)
    p_value = float((1 + np.count_nonzero(np.abs(boot - diff) >= abs(diff))) / (n_resamples + 1))
    return PairedResult(diff, low, high, p_value, len(deltas), level, n_resamples, seed)


def bootstrap_statistic_ci(rows, fn: Callable, *, n_resamples: int = 1000, level: float = 0.95,
                           seed: int = 0, desc: str = "bootstrap", bias_corrected: bool = False,
                           lower_bound: float | None = None) -> CI:
    """CI of an arbitrary `fn(rows) -> float` by resampling the rows (first axis) with replacement.

    One call of `fn` per resample (a Python loop: `fn` may be anything, e.g. FID over resampled image features).
    `bias_corrected` shifts the percentile interval by the bootstrap bias estimate (mean of replicates − value):
    statistics such as FID rise when resampled rows repeat, which would leave the interval above the estimate.
    `lower_bound`: the statistic's least possible value (FID: 0); a shifted endpoint below it is raised to it.
    """
    rows = np.asarray(rows)
    if rows.ndim == 0 or len(rows) < 2:
        raise ValueError(f"bootstrap_statistic_ci needs at least 2 rows; got array of shape {rows.shape}.")
    _check_level(level, n_resamples)
    rng = np.random.default_rng(seed)
    value = float(fn(rows))
    n = len(rows)
    boot = np.array([fn(rows[rng.integers(0, n, n)])
                     for _ in tqdm(range(n_resamples), desc=desc, leave=False, disable=n_resamples < 50)])
    low, high = _percentiles(boot, level)
    if bias_corrected:
        bias = float(boot.mean()) - value
        low, high = low - bias, high - bias
    if lower_bound is not None:
        low, high = max(low, lower_bound), max(high, lower_bound)
    return CI(value, low, high, n, level, n_resamples, seed)


def _as_scores(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D array of scores, got shape {x.shape}.")
    n_nan = int(np.isnan(x).sum())
    if n_nan:
        raise ValueError(f"{what}: {n_nan} of {len(x)} scores are NaN. Failed items must be counted and "
                         f"reported by the metric, not averaged; drop or fix them before the bootstrap.")
    return x


def _check_level(level: float, n_resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}.")


def _group_index(groups, n: int) -> np.ndarray | None:
    """Integer group id per score (0..G-1), or None for the item-level bootstrap."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups: expected one id per score ({n}), got shape {groups.shape}.")
    return np.unique(groups, return_inverse=True)[1].ravel()


def _resampled_statistic(scores: np.ndarray, group_ids: np.ndarray | None, statistic: Callable,
                         n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of `statistic`: items, or whole groups, drawn with replacement."""
    if group_ids is None:
        return _chunked(n_resamples, len(scores), rng,
                        lambda draws: statistic(scores[draws], axis=-1))

    order = np.argsort(group_ids, kind="stable")
    sorted_scores = scores[order]
    sizes = np.bincount(group_ids)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_groups = len(sizes)

    if statistic is np.mean:  # ratio of drawn sums to drawn counts: exact and fully vectorised
        sums = np.add.reduceat(sorted_scores, starts)
        return _chunked(n_resamples, n_groups, rng,
                        lambda draws: sums[draws].sum(axis=-1) / sizes[draws].sum(axis=-1))

    if np.all(sizes == sizes[0]):  # equal group sizes (k images per prompt): a rectangular index
        offsets = np.arange(sizes[0])
        return _chunked(n_resamples, n_groups, rng, lambda draws: statistic(
            sorted_scores[(starts[draws][..., None] + offsets).reshape(len(draws), -1)], axis=-1))

    # Unequal groups with a general statistic: resamples differ in length, one call each.
    def ragged(draws):
        out = np.empty(len(draws))
        for r, drawn in enumerate(draws):
            lengths = sizes[drawn]
            shift = np.repeat(starts[drawn] - (np.cumsum(lengths) - lengths), lengths)
            out[r] = statistic(sorted_scores[shift + np.arange(lengths.sum())], axis=-1)
        return out
    return _chunked(n_resamples, n_groups, rng, ragged)


def _chunked(n_resamples: int, width: int, rng: np.random.Generator, reduce: Callable) -> np.ndarray:
    """Draw index matrices chunk by chunk (rows = resamples) and reduce each row to one replicate."""
    per_chunk = max(1, CHUNK_ELEMENTS // width)
    out = []
    for start in range(0, n_resamples, per_chunk):
        draws = rng.integers(0, width, size=(min(per_chunk, n_resamples - start), width))
        out.append(np.asarray(reduce(draws), dtype=np.float64))
    return np.concatenate(out)


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return float(low), float(high)
