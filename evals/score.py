"""Score one generated cell with one scorer: per-image scores (parquet) and the cell's aggregate (JSON).

python -m evals.score --scorer NAME --settings JSON --cell DIR --protocol BENCH@VERSION \
    --scores-out results/scores/…/NAME.parquet --metric-out results/metrics/…/NAME.json

Per-image rows: sample_id, prompt_id, image_index, score (NaN when the image failed), error. The aggregate
is the mean over scored images with a seeded bootstrap 95% CI over prompts, n, n_failed, the protocol (and
prompt_limit when the prompt set was cut), the scorer's name and weights fingerprint, compute seconds, and the
cell's provenance (model fingerprint, sampler, steps, cfg, …). A failed image is named and counted, never dropped silently.
"""
import argparse
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from evals.stats import bootstrap_ci
from pixart.atomic import write_all_atomic, write_text_atomic
from pixart.cli import clean_errors, positive_int
from pixart.configschema import read_entry_file
from pixart.inputfiles import read_parquet_table

OPEN_CHUNK = 512  # images a per-image scorer holds decoded at once
PROVENANCE = ("model", "model_fingerprint", "sampler", "steps", "cfg", "uncond", "dtype", "cell_key")
MANIFEST_COLUMNS = ("sample_id", "prompt_id", "image_index", "file", "prompt")  # what every kind reads
PROTOCOL = re.compile(r"^[^@/\s]+@[^@/\s]+(/[^@\s]+)?$")  # bench@version[/subset], as the DAG writes it
# what the DAG adds to a scorer's entry of the config (workflows/rules/common.smk scorer_settings)
DAG_KEYS = {"scorer_version": {"type": ["integer", "null"]},
            "backend_versions": {"type": "object", "additionalProperties": {"type": "integer"}}}


class CellInputError(ValueError):
    """A scoring job's settings file, manifest or argument that cannot be used; the message names it and the fix."""


def read_settings(path: Path) -> dict:
    """A scorer's settings JSON, checked against the config schema's `scorers:` entry: a wrong type (np_num
    "eight"), an unknown key or kind is named here, before any weights are loaded."""
    return read_entry_file(path, "scorers", DAG_KEYS, CellInputError,
                           "--settings is the config's scorers: entry (the DAG writes it to results/scorers/NAME.json)")


def read_manifest(cell: Path) -> pd.DataFrame:
    """The cell's manifest.parquet: present, readable, with the columns every kind reads and at least one image."""
    path = Path(cell) / "manifest.parquet"
    fix = "generate the cell, or merge its shards (python -m pixart.manifest)"
    manifest = read_parquet_table(path, MANIFEST_COLUMNS, CellInputError, "manifest", fix)
    if manifest.empty:
        raise CellInputError(f"manifest {path} lists no images: nothing to score; {fix}")
    return manifest


def open_images(cell: Path, files):
    """PIL images of a cell; unreadable files give None plus their error, so they are counted."""
    from PIL import Image

    images, errors = [], []
    for name in files:
        try:
            with Image.open(cell / name) as img:
                images.append(img.convert("RGB"))
            errors.append(None)
        except (OSError, SyntaxError, ValueError) as err:
            images.append(None)
            errors.append(f"{name}: {err}")
    return images, errors


def clip_score_kind(settings: dict, manifest: pd.DataFrame, cell: Path):
    from evals.metrics.clip_score import load_clip
    from pixart.runtime import pick_device

    scorer = load_clip(settings.get("variant", "custom"), settings["weights"], model_name=settings.get("model_name"),
                       prefix=settings.get("prefix", ""), config_dir=settings.get("config_dir"),
                       device=pick_device(settings.get("device", "auto")))
    if "scale" in settings:
        scorer.scale = float(settings["scale"])
    scores, errors = np.full(len(manifest), np.nan), []
    # a chunk of decoded images at a time: a 1024-px COCO-30K cell held whole would need ~94 GB
    for start in range(0, len(manifest), OPEN_CHUNK):
        part = manifest.iloc[start:start + OPEN_CHUNK]
        images, part_errors = open_images(cell, part["file"])
        errors += part_errors
        ok = [i for i, img in enumerate(images) if img is not None]
        if ok:
            scores[[start + i for i in ok]] = scorer.score([images[i] for i in ok], [part["prompt"].iloc[i] for i in ok])
    meta = {"scorer": scorer.name, "weights_fingerprint": scorer.fingerprint, "higher_is_better": True,
            "n_truncated_captions": scorer.n_truncated}
    return scores, errors, meta


def load_extractor(settings: dict):
    """The feature extractor a fidelity scorer names: inception (clean-fid), dinov2 (timm) or a CLIP tower."""
    from evals.metrics import features
    from pixart.runtime import pick_device

    device = pick_device(settings.get("device", "auto"))
    kind = settings.get("extractor", "inception")
    if kind == "inception":
        return features.load_inception(settings.get("weights"), mode=settings.get("mode", "clean"), device=device)
    if kind == "dinov2":
        return features.load_dinov2(settings["weights"], device=device)
    if kind == "clip":
        from evals.metrics.clip_score import clip_feature_extractor, load_clip

        scorer = load_clip(settings.get("variant", "custom"), settings["weights"],
                           model_name=settings.get("model_name"), config_dir=settings.get("config_dir"), device=device)
        return clip_feature_extractor(scorer, f"clip:{settings.get('model_name') or settings.get('variant')}")
    raise CellInputError(f"unknown extractor {kind!r}; use inception, dinov2 or clip")


def fidelity_kind(settings: dict, manifest: pd.DataFrame, cell: Path):
    """FID / KID / FD of the cell's images against a reference set (the protocol's, checked by name);
    CI by bootstrap over generated images."""
    from evals.benchmarks.loaders import check_reference_names
    from evals.metrics import fid as fidelity
    from evals.metrics.features import extract_features, list_images

    extractor = load_extractor(settings)
    preprocess = settings.get("preprocess", "coco256")
    distance = settings.get("distance", "fid")
    reference = settings.get("reference")
    if not reference:
        raise ValueError("a fidelity scorer needs `reference:` (a folder or zip of reference images)")
    reference_images = list_images(reference)  # listed once: checked here, then read by reference_stats
    listed = [json.loads(m).get("file_name") for m in manifest.get("metadata", pd.Series([], dtype=str))]
    check_reference_names(settings.get("_protocol", ""), reference, reference_images.names, listed)
    ref = fidelity.reference_stats(reference_images, extractor, preprocess=preprocess,
                                   keep_features=distance == "kid",
                                   cache_dir=settings.get("refstats_dir", fidelity.REFSTATS_DIR))
    # resolved, as list_images names a list's files: the cell is usually relative (results/samples/…)
    files = [(cell / f).resolve() for f in manifest["file"]]
    extracted = extract_features(files, extractor, transform=fidelity.preprocessing_transform(preprocess),
                                 on_error="skip", desc=f"{distance} features")
    bad = dict(extracted.bad_files)
    errors = [f"{f.name}: {bad[str(f)]}" if str(f) in bad else None for f in files]
    feats = extracted.features
    if len(feats) + sum(e is not None for e in errors) != len(files):
        raise RuntimeError(f"{cell}: {len(files)} images, {len(feats)} features and {len(bad)} failures do not add up")
    seed, n_resamples = int(settings.get("seed", 0)), int(settings.get("n_resamples", 200))
    if distance == "kid":
        value = fidelity.kid_from_features(feats, ref["features"], seed=seed)
        from evals.stats import bootstrap_statistic_ci

        boot = bootstrap_statistic_ci(feats, lambda rows: fidelity.kid_from_features(rows, ref["features"], seed=seed),
                                      n_resamples=n_resamples, seed=seed, bias_corrected=True)
    else:
        value = fidelity.fid_from_features(feats, ref)
        boot = fidelity.fid_ci(feats, ref, n_resamples=n_resamples, seed=seed, bias_corrected=True)
    low, high = boot.low, boot.high
    meta = {"scorer": f"{distance}_{extractor.mode}_{extractor.name}_{preprocess}",
            "weights_fingerprint": extractor.fingerprint, "higher_is_better": False,
            "reference": str(reference), "reference_n": int(ref["n"]), "reference_key": ref["key"],
            "aggregate": {"value": float(value), "ci_low": float(low), "ci_high": float(high), "level": boot.level,
                          "n": int(len(feats)), "ci_method": f"bias-corrected percentile bootstrap over generated images, "
                                                             f"{n_resamples} resamples, seed {seed}"
                                                             + (", ends at least 0" if distance == "fid" else "")}}
    return np.full(len(files), np.nan), errors, meta


def category_aggregate(scores: np.ndarray, categories: list[str], prompt_ids, weights: dict | None = None,
                       n_resamples: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """Headline = weighted mean of per-category means (equal weights over the cell's categories when None), with
    a CI that resamples prompts within each category (`stratified_mean_ci`), plus one row per category. Used by
    WISE (Overall) and GenEval (mean of the task scores). A category without a single scored image leaves the
    headline undefined (value None, the reason in `note`): the mean of the other categories is another number. A
    category scored on one prompt only leaves the headline without a CI (nothing to resample within it)."""
    from evals.stats import bootstrap_ci, stratified_mean_ci

    cats, prompts = np.asarray(categories, dtype=object), np.asarray(prompt_ids, dtype=object)
    valid = ~np.isnan(scores)
    unweighted = sorted(set(cats) - set(weights)) if weights else []
    if unweighted:
        raise ValueError(f"categories {unweighted} have no weight in the headline (weights: {sorted(weights)})")
    expected = sorted(weights) if weights else sorted(set(cats))
    scored = set(cats[valid])
    missing = [c for c in expected if c not in scored]
    what = f"the {'weighted ' if weights else ''}mean of category means"
    aggregate = {"value": None, "ci_low": None, "ci_high": None, "level": 0.95, "n": int(valid.sum())}
    scored_in = {c: valid & (cats == c) for c in expected}
    prompts_per = {c: len(set(prompts[scored_in[c]])) for c in expected}
    single = [c for c in expected if prompts_per[c] == 1]
    if missing:
        aggregate["note"] = f"no scores for {missing}: {what} is undefined"
    elif single:
        w = {c: (weights[c] if weights else 1.0) for c in expected}
        means = {c: float(scores[scored_in[c]].mean()) for c in expected}
        aggregate.update(value=sum(w[c] * means[c] for c in expected) / sum(w.values()),
                         note=f"{what}; no CI: {single} scored on one prompt only")
    else:
        ci = stratified_mean_ci(scores[valid], cats[valid], prompts[valid], weights, n_resamples=n_resamples,
                                seed=seed)
        aggregate.update(value=ci.value, ci_low=ci.low, ci_high=ci.high, level=ci.level,
                         ci_method=f"{what}; bootstrap over prompts within each category (rescaled by "
                                   f"sqrt(n/(n-1)), clipped to the category's score range), {n_resamples} "
                                   f"resamples, seed {seed}")
    breakdown = {}
    for name in expected:
        group = scores[scored_in[name]]
        cci = (bootstrap_ci(group, groups=prompts[scored_in[name]], n_resamples=n_resamples, seed=seed)
               if prompts_per[name] >= 2 else None)
        breakdown[name] = {"value": float(group.mean()) if len(group) else None, "n": int(len(group)),
                           "ci_low": cci.low if cci else None, "ci_high": cci.high if cci else None,
                           "n_failed": int(((cats == name) & ~valid).sum())}
    return aggregate, breakdown


def wise_kind(settings: dict, manifest: pd.DataFrame, cell: Path):
    """WISE judge scores (WiScore per image); Overall with the category weights, a CI, per-category rows."""
    from evals.metrics import wise

    client = wise.JudgeClient(settings["base_url"], settings.get("model", wise.DEFAULT_MODEL),
                              api_key_env=settings.get("api_key_env", "OPENAI_API_KEY"),
                              timeout=float(settings.get("timeout", 120)), retries=int(settings.get("retries", 3)))
    cache = wise.JudgementCache(Path(settings["_output"]).with_suffix(".judgements.jsonl"))
    judged = wise.judge_images(wise.items_from_prompts(manifest, cell), client, cache,
                               concurrency=int(settings.get("concurrency", 4))).set_index("sample_id")
    judged = judged.loc[manifest["sample_id"]]
    errors = [None if pd.isna(e) else f"{sid}.png: {e}" for sid, e in zip(judged.index, judged["error"])]
    scores = judged["wiscore"].to_numpy(float)
    aggregate, breakdown = category_aggregate(scores, list(judged["category"]), manifest["prompt_id"],
                                              wise.OVERALL_WEIGHTS, *_resampling(settings))
    meta = {"scorer": f"wise_judge:{client.model}", "weights_fingerprint": wise.RUBRIC_VERSION,
            "higher_is_better": True, "breakdown": breakdown, "n_cached": int(judged["cached"].sum()),
            "aggregate": aggregate}
    return scores, errors, meta


def geneval_score_kind(settings: dict, manifest: pd.DataFrame, cell: Path):
    """GenEval: 1/0 per image; headline Overall = mean of the six task scores, with a CI and per-task rows."""
    from evals.metrics.geneval_backends import geneval_kind

    from evals.metrics.geneval import TAGS

    scores, errors, meta = geneval_kind(settings, manifest, cell)
    tags = [json.loads(m).get("tag") for m in manifest["metadata"]]
    # Overall is the mean of all six tasks: a cell without some (a `limit:` subset) has no Overall
    aggregate, breakdown = category_aggregate(np.asarray(scores, float), tags, manifest["prompt_id"],
                                              {tag: 1 / len(TAGS) for tag in TAGS}, *_resampling(settings))
    return scores, errors, {**meta, "breakdown": breakdown, "aggregate": aggregate}


def _compbench_kinds() -> dict:
    from evals.metrics.compbench_scorers import KINDS as COMPBENCH

    return COMPBENCH


KINDS = {"clip_score": clip_score_kind, "fidelity": fidelity_kind, "wise": wise_kind, "geneval": geneval_score_kind,
         **_compbench_kinds()}


def _resampling(settings: dict) -> tuple[int, int]:
    """(n_resamples, seed) of a per-image metric's CI: the scorer's settings, else 1000 resamples, seed 0."""
    return int(settings.get("n_resamples", 1000)), int(settings.get("seed", 0))


def aggregate(frame: pd.DataFrame, seed: int = 0, n_resamples: int = 1000) -> dict:
    valid = frame[frame["score"].notna()]
    n_failed = int((frame["error"].notna() | frame["score"].isna()).sum())
    if valid.empty:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0, "n_failed": n_failed}
    if valid["prompt_id"].nunique() < 2:
        return {"value": float(valid["score"].mean()), "ci_low": None, "ci_high": None, "n": len(valid),
                "n_failed": n_failed, "note": "one prompt: no CI (the bootstrap resamples prompts)"}
    ci = bootstrap_ci(valid["score"].to_numpy(float), groups=valid["prompt_id"].to_numpy(),
                      n_resamples=n_resamples, seed=seed)
    return {"value": ci.value, "ci_low": ci.low, "ci_high": ci.high, "level": ci.level, "n": ci.n,
            "n_failed": n_failed, "ci_method": f"bootstrap over prompts, {n_resamples} resamples, seed {seed}"}


def seed_summary(manifest: pd.DataFrame) -> str:
    """The seeds a cell used, e.g. '42..51 per image' (T2I-CompBench) or '0..29999'."""
    if "seed" not in manifest:
        return "unknown"
    low, high = int(manifest["seed"].min()), int(manifest["seed"].max())
    per_image = "image_index" in manifest and manifest.groupby("image_index")["seed"].nunique().eq(1).all()
    return f"{low}..{high}" + (" per image" if per_image and manifest["prompt_id"].nunique() > 1 else "")


def check_images_per_prompt(manifest: pd.DataFrame, cell: Path):
    """Every prompt must have the same number of images: protocol means assume it (T2I-CompBench: 10)."""
    counts = manifest.groupby("prompt_id").size()
    if counts.nunique() > 1:
        usual = int(counts.mode().iloc[0])
        odd = counts[counts != usual]
        raise CellInputError(f"{cell}: images per prompt differ (most prompts have {usual}; "
                         f"{', '.join(f'{p}: {n}' for p, n in odd.head(5).items())}"
                         f"{' …' if len(odd) > 5 else ''}); regenerate the cell so every prompt is complete")


def foreign_images(manifest: pd.DataFrame, cell: Path) -> dict[int, str]:
    """Rows whose PNG records another cell or sample than its manifest row (copied in by hand, or a file
    renamed): row → reason. Images without our provenance (or unreadable ones) are left to the scorer."""
    from pixart.pngio import read_meta

    if "cell_key" not in manifest:
        return {}
    foreign = {}
    for i, row in enumerate(manifest.itertuples()):
        meta = read_meta(cell / row.file, verify=False)
        if meta and (meta.get("cell_key"), meta.get("sample_id")) != (row.cell_key, row.sample_id):
            foreign[i] = (f"{row.file}: made for cell {meta.get('cell_key')} as {meta.get('sample_id')}, not for "
                          f"this cell ({row.cell_key}) as {row.sample_id}: regenerate it")
    return foreign


def run(args) -> dict:
    started = time.perf_counter()
    if not PROTOCOL.match(args.protocol):
        raise CellInputError(f"--protocol {args.protocol!r} is not BENCH@VERSION[/SUBSET] (e.g. coco30k@1, "
                             f"t2i_compbench@1/color): every number is recorded under it")
    settings = read_settings(args.settings)
    kind = settings["kind"]
    settings["_output"] = str(args.scores_out)  # kinds keep side files (judgement caches) beside it
    settings["_protocol"] = args.protocol  # fidelity checks its reference against the protocol's
    manifest = read_manifest(Path(args.cell))
    check_images_per_prompt(manifest, Path(args.cell))
    foreign = foreign_images(manifest, Path(args.cell))
    kept = [i for i in range(len(manifest)) if i not in foreign]
    if not kept:
        raise CellInputError(f"every image of {args.cell} was made for another cell or sample "
                             f"(first: {next(iter(foreign.values()))}); regenerate the cell")
    # a foreign image is a counted failure, and never reaches a statistic (FID's above all)
    part_scores, part_errors, meta = KINDS[kind](settings, manifest.iloc[kept].reset_index(drop=True),
                                                 Path(args.cell))
    scores, errors = np.full(len(manifest), np.nan), [None] * len(manifest)
    for i, reason in foreign.items():
        errors[i] = reason
    for j, i in enumerate(kept):
        scores[i], errors[i] = part_scores[j], part_errors[j]
    frame = manifest[["sample_id", "prompt_id", "image_index"]].copy()
    frame["score"], frame["error"] = scores, errors
    first = manifest.iloc[0]
    set_level = meta.pop("aggregate", None)  # set-level metrics (FID) aggregate themselves
    n_resamples, seed = _resampling(settings)
    summary = ({**set_level, "n_failed": sum(e is not None for e in errors)} if set_level
               else aggregate(frame, seed=seed, n_resamples=n_resamples))
    result = {"metric": args.scorer, "kind": kind, "protocol": args.protocol, **summary,
              **meta, "seconds": round(time.perf_counter() - started, 3),
              **{k: (first[k].item() if hasattr(first[k], "item") else first[k]) for k in PROVENANCE if k in first},
              # a cell resumed across code versions lists them all
              **({"code_version": ", ".join(sorted(manifest["code_version"].astype(str).unique()))}
                 if "code_version" in manifest else {}),
              "bench": args.bench or args.protocol.split("@")[0], "cell": str(args.cell),
              # a run over the first N prompts only is labelled so in the report's tables
              "prompt_limit": args.prompt_limit, "n_prompts": int(manifest["prompt_id"].nunique()),
              "seeds": seed_summary(manifest), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    failed = [e for e in errors if e]
    if failed:
        result["failed_examples"] = failed[:5]
    text = json.dumps(result, indent=1, default=str)
    # the pair is written together: a failed write leaves neither half replaced
    write_all_atomic({Path(args.scores_out): lambda tmp: frame.to_parquet(tmp, index=False),
                      Path(args.metric_out): lambda tmp: tmp.write_text(text, encoding="utf-8")})
    if args.history_dir:  # append-only: a new uniquely named file per job, never a shared one
        stamp = result["time"].replace(":", "").replace("-", "")
        write_text_atomic(Path(args.history_dir) / f"{stamp}-{result.get('cell_key', 'cell')}-{args.scorer}.json",
                          json.dumps(result, default=str))
    value = ("n/a" if result["value"] is None else f"{result['value']:.4f}" + (
        " (no CI)" if result.get("ci_low") is None else f" [{result['ci_low']:.4f}, {result['ci_high']:.4f}]"))
    print(f"score: {args.scorer} on {args.cell}: {value} (n={result['n']}, failed={result['n_failed']}) "
          f"in {result['seconds']:.1f}s")
    return result


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scorer", required=True, help="metric name (the config's scorers: key)")
    p.add_argument("--settings", type=Path, required=True, help="JSON with the scorer's kind and settings")
    p.add_argument("--cell", type=Path, required=True, help="generated cell folder (with manifest.parquet)")
    p.add_argument("--protocol", required=True, help="BENCH@VERSION recorded with every number")
    p.add_argument("--bench", help="the config's name of the prompt set (default: the protocol's name)")
    p.add_argument("--prompt-limit", type=positive_int, help="the prompt set was cut to its first N prompts (the "
                   "benchmark's `limit:`); recorded so tables never present the run as the full protocol")
    p.add_argument("--scores-out", type=Path, required=True)
    p.add_argument("--metric-out", type=Path, required=True)
    p.add_argument("--history-dir", type=Path, help="also append this result to the run history (one file per job)")
    return p


@clean_errors("evals.score")
def main(argv=None):
    run(parser().parse_args(argv))


if __name__ == "__main__":
    main()
