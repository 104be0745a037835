"""T2I-CompBench(++) per-image scorers for `evals/score.py` (one function per scorer kind).

Every kind has the `KINDS` signature `(settings, manifest, cell) -> (scores, errors, meta)`:

- `compbench_blip_vqa_kind`   Color / Shape / Texture: BLIP-VQA product over the frozen noun-phrase
                              questions (np_num 8; 2 = the earlier "Set A" tables).
- `compbench_spatial_2d_kind` 2D spatial: detector + the soft 2D rule (scores < 0.5 -> 0).
- `compbench_spatial_3d_kind` 3D spatial (++): detector + DPT/MiDaS depth + the 3D rule.
- `compbench_numeracy_kind`   numeracy (++): detector + counts parsed with new_objects.txt.
- `compbench_complex_kind`    3-in-1: BLIP-VQA (A), 2D spatial in complex mode (S), CLIP ViT-B/32 raw cosine on
                              the adjective-stripped text (C), combined per the prompt's complex group.

The rules are `evals.metrics.compbench` (pure, quirks kept); the prompts' noun chunks, objects and
adjective-free text come from the frozen spaCy parses (`compbench.load_prompt_parses`, never spaCy at run
time). Every manifest prompt must be in the parse file(s): a missing one raises `MissingParseError` (naming
the prompt and the parse file) before any model is loaded.

Settings (all optional unless marked; JSON values, plus injected Python objects for tests / other backends):
  common     val_file (str or list, relative to evals/benchmarks/data/t2i_compbench/; default per kind),
             device ("auto"), chunk_size (images opened at a time, 16)
  BLIP       weights (blip kind) / blip_weights (complex kind): local folder or HF id in the cache
             (default Salesforce/blip-vqa-capfilt-large), np_num (8), blip_batch_size (8),
             question_filter (true: drop the chunks "top", "the side", "the left", "the right" as upstream
             since 2024-01-28; false: the earlier behaviour)
  detector   detector ("owlv2" | "unidet"), weights (spatial/numeracy kinds) or detector_weights (OWLv2
             folder or HF id, default google/owlv2-base-patch16-ensemble), detector_threshold (OWLv2 0.1,
             UniDet 0.5), nms_iou (OWLv2, 0.5), unidet_root + backbone (RS200 for 2D/complex, R50 for 3D and
             numeracy as upstream)
  depth      depth_weights (default Intel/dpt-hybrid-midas)
  numeracy   new_objects (path of the singular-plural table; default the shipped one)
  complex    clip_weights (required unless _clip), clip_variant ("clip_vitb32_cosine"), clip_model_name,
             clip_config_dir, clip_batch_size (32), clip_text ("without_adjectives" | "prompt"),
             spatial_objects ("complex" | "first_last"; the latter = the Oct-2023 simple structure)
  injected   _blip (has `question_probabilities(images, questions, np_num)`), _detector (`detect(image,
             labels)`, optionally `detect_batch(images, label_lists)`), _depth (`depth_in_detector_frame(image)`,
             optionally `depth_batch(images)`), _clip (`score(images, captions, batch_size=)`). An injected
             object's `fingerprint` attribute (if any) is used as its weights fingerprint.

Each image whose file cannot be read or whose scoring raises gets NaN and an error string starting with its
file name; if every readable image fails, the kind raises (a systematic error, not a per-image failure).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from evals.metrics import compbench as cb

DATA_DIR = cb.PARSE_DIR.parent / "t2i_compbench"
NEW_OBJECTS = DATA_DIR / "new_objects.txt"
COMPLEX_GROUP_FILES = {"spatial": "complex_val_spatial.txt", "action": "complex_val_action.txt"}
COMPLEX_GROUPS = ("spatial", "action", "spatialaction")

# Prompt files searched when the settings name none. The attribute kinds accept any attribute category
# (the frozen parse of a prompt does not depend on the file it came from).
DEFAULT_VAL_FILES = {
    "blip_vqa": ("legacy_7710d05/color_val.txt", "color_val.txt", "shape_val.txt", "texture_val.txt"),
    "spatial_2d": ("spatial_val.txt",),
    "spatial_3d": ("3d_spatial_val.txt",),
    "numeracy": ("numeracy_val.txt",),
    "complex": ("complex_val.txt",),
}
DEFAULT_CHUNK = 16
FINGERPRINT_LEN = 16


class MissingParseError(LookupError):
    """A manifest prompt has no frozen spaCy parse."""


class ScoringError(RuntimeError):
    """Every readable image of the cell failed to score: a configuration or model problem."""


# --------------------------------------------------------------------------------------------------
# Parses, settings, images
# --------------------------------------------------------------------------------------------------


def _val_files(settings: dict, kind: str) -> tuple[str, ...]:
    value = settings.get("val_file") or DEFAULT_VAL_FILES[kind]
    return (value,) if isinstance(value, str) else tuple(value)


def prompt_parses(prompts: Sequence[str], val_files: Sequence[str]) -> dict[str, cb.PromptParse]:
    """The frozen parse of every distinct prompt, looked up in the given val files (first file wins)."""
    merged: dict[str, cb.PromptParse] = {}
    for val_file in reversed(val_files):
        merged.update(cb.load_prompt_parses(val_file))
    missing = list(dict.fromkeys(p for p in prompts if p not in merged))
    if missing:
        files = ", ".join(str(cb.parse_file_path(f)) for f in val_files)
        shown = "; ".join(repr(p) for p in missing[:5])
        raise MissingParseError(
            f"{len(missing)} prompt(s) of the manifest are not in the frozen parse file(s) {files} "
            f"(first: {shown}). The prompt must be the exact line text of the val file (before any TAB, "
            f"stripped); set `val_file` to the right prompt file, or freeze a new prompt file with "
            f"`tools/freeze_compbench_parse.py`."
        )
    return {p: merged[p] for p in dict.fromkeys(prompts)}


def parse_meta(val_files: Sequence[str]) -> dict:
    """The val files and a fingerprint of their frozen parses' bytes: regenerated parses (another spaCy or model)
    ask other questions of other objects, so numbers made with them must not be compared as the same scorer."""
    digest = hashlib.sha256()
    for val_file in val_files:
        digest.update(str(val_file).encode() + b"\0" + cb.parse_file_path(val_file).read_bytes())
    return {"val_files": list(val_files), "parse_fingerprint": digest.hexdigest()[:FINGERPRINT_LEN]}


def _check_manifest(manifest: pd.DataFrame) -> None:
    missing = {"prompt", "file"} - set(manifest.columns)
    if missing:
        raise ValueError(f"manifest lacks the column(s) {sorted(missing)}")


def _open_image(cell: Path, name: str):
    """(RGB image, None) or (None, 'name: error')."""
    from PIL import Image

    try:
        with Image.open(cell / name) as img:
            return img.convert("RGB"), None
    except (OSError, SyntaxError, ValueError) as err:
        return None, f"{name}: cannot read image: {err}"


def _readable_chunks(manifest: pd.DataFrame, cell: Path, size: int, errors: list,
                     unreadable: list) -> Iterator[tuple[list[int], list]]:
    """(row indices, images) of the readable images in consecutive chunks of the manifest (bounded memory).
    An unreadable file gets its error in `errors[row]` and its row appended to `unreadable`."""
    files = list(manifest["file"])
    for start in range(0, len(files), size):
        rows, images = [], []
        for i in range(start, min(len(files), start + size)):
            image, err = _open_image(Path(cell), str(files[i]))
            if err:
                errors[i] = err
                unreadable.append(i)
            else:
                rows.append(i)
                images.append(image)
        yield rows, images


def _guarded(batch_call: Callable[[], Sequence], single_call: Callable[[int], Any], n: int) -> list:
    """Results of one batched call; when it raises, each item alone, so that only the failing items fail
    (their entry is the exception)."""
    if n == 0:
        return []
    try:
        out = list(batch_call())
        if len(out) != n:
            raise RuntimeError(f"backend returned {len(out)} results for {n} inputs")
        return out
    except Exception as batch_err:  # noqa: BLE001 - retried item by item below
        if n == 1:
            return [batch_err]
    results = []
    for i in range(n):
        try:
            results.append(single_call(i))
        except Exception as err:  # noqa: BLE001 - recorded as that image's error
            results.append(err)
    return results


def _error(name: str, err: BaseException) -> str:
    return f"{name}: scoring failed: {type(err).__name__}: {err}"


def _finish(scores: np.ndarray, errors: list[str | None], n_unreadable: int) -> None:
    check_not_all_failed([e for e in errors if e and "scoring failed" in e], len(scores) - n_unreadable)


def check_not_all_failed(failed: list[str], n_readable: int) -> None:
    """Every readable image failing is the backend's fault (weights, device, out of memory), not the images':
    the job fails, so that it is retried or looked at, instead of recording a cell of failures."""
    if n_readable > 0 and len(failed) == n_readable:
        raise ScoringError(f"all {n_readable} readable images failed to score (first: {failed[0]})")


def _device(settings: dict):
    from pixart.runtime import pick_device

    return pick_device(settings.get("device", "auto"))


# --------------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------------


def _sha_file(path: Path, digest) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def path_fingerprint(path: str | Path) -> str:
    """sha256 prefix of a weights file, or of a folder's files (relative names + contents; hidden entries
    such as .cache skipped)."""
    path = Path(path).expanduser()
    digest = hashlib.sha256()
    if path.is_file():
        _sha_file(path, digest)
    else:
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = f.relative_to(path)
            if any(part.startswith(".") for part in rel.parts):
                continue
            digest.update(rel.as_posix().encode() + b"\0")
            _sha_file(f, digest)
    return digest.hexdigest()[:FINGERPRINT_LEN]


def module_fingerprint(module) -> str:
    """sha256 prefix over a torch module's state dict (names, dtypes, shapes, raw bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}\0".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:FINGERPRINT_LEN]


def backend_fingerprint(backend, source: str | Path | None = None) -> str:
    """An injected backend's own `fingerprint`, else the local weights file/folder, else the tensors of the
    backend's torch module (`backend.model` or the backend itself)."""
    import torch

    own = getattr(backend, "fingerprint", None)
    if isinstance(own, str) and own:
        return own
    if source is not None and Path(source).expanduser().exists():
        return path_fingerprint(source)
    module = backend if isinstance(backend, torch.nn.Module) else getattr(backend, "model", None)
    if isinstance(module, torch.nn.Module):
        return module_fingerprint(module)
    return f"unfingerprinted:{type(backend).__name__}"


def combine_fingerprints(parts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:FINGERPRINT_LEN]


def _backend_name(backend) -> str:
    return str(getattr(backend, "name", type(backend).__name__))


# --------------------------------------------------------------------------------------------------
# Backends (built once per kind call unless injected)
# --------------------------------------------------------------------------------------------------


def build_blip(settings: dict, weights_key: str):
    """(BlipVqa-like backend, fingerprint)."""
    if settings.get("_blip") is not None:
        blip = settings["_blip"]
        return blip, backend_fingerprint(blip)
    vqa = settings.get("vqa", "blip")
    if vqa == "shapes_oracle":  # the shapes world's exact scene parser (evals/shapes/oracle.py)
        from evals.shapes.oracle import ShapesOracle
        return ShapesOracle(), ShapesOracle.fingerprint
    if vqa != "blip":  # not BLIP by default: a misspelt oracle would be scored with BLIP where its weights are cached
        raise ScoringError(f"scorer settings: vqa {vqa!r} is not a VQA backend; use blip or shapes_oracle")
    from evals.metrics.blip_vqa import DEFAULT_BLIP_VQA, BlipVqa

    source = settings.get(weights_key) or DEFAULT_BLIP_VQA
    blip = BlipVqa.from_pretrained(source, batch_size=int(settings.get("blip_batch_size", 8)),
                                   device=_device(settings))
    return blip, backend_fingerprint(blip, source)


def build_detector(settings: dict, weights_key: str, default_backbone: str):
    """(detector, short tag for the scorer name, fingerprint)."""
    if settings.get("_detector") is not None:
        det = settings["_detector"]
        return det, _backend_name(det), backend_fingerprint(det)
    backend = settings.get("detector", "owlv2")
    if backend == "shapes_oracle":  # the shapes world's exact scene parser (evals/shapes/oracle.py)
        from evals.shapes.oracle import ShapesOracle
        return ShapesOracle(), ShapesOracle.name, ShapesOracle.fingerprint
    if backend == "owlv2":
        from evals.metrics.detectors import DEFAULT_OWLV2, Owlv2Detector

        source = settings.get(weights_key) or DEFAULT_OWLV2
        nms = settings.get("nms_iou", 0.5)
        det = Owlv2Detector.from_pretrained(source, threshold=float(settings.get("detector_threshold", 0.1)),
                                            nms_iou=None if nms is None else float(nms), device=_device(settings))
        return det, "owlv2", backend_fingerprint(det, source)
    if backend == "unidet":
        from evals.metrics.detectors import UNIDET_CONFIGS, UNIDET_SCORE_THRESHOLD, UniDetDetector

        root = settings.get("unidet_root")
        if not root:
            raise ValueError("detector 'unidet' needs `unidet_root` (T2I-CompBench's UniDet_eval folder with the "
                             "weights under experts/expert_weights/)")
        backbone = settings.get("backbone", default_backbone)
        det = UniDetDetector(root, backbone=backbone, device=str(_device(settings)),
                             score_threshold=float(settings.get("detector_threshold", UNIDET_SCORE_THRESHOLD)))
        weights = Path(root) / "experts" / "expert_weights" / f"{UNIDET_CONFIGS[backbone]}.pth"
        return det, det.name, path_fingerprint(weights)
    raise ValueError(f"unknown detector {backend!r}; use 'owlv2', 'unidet' or 'shapes_oracle'")


def build_depth(settings: dict):
    if settings.get("_depth") is not None:
        depth = settings["_depth"]
        return depth, _backend_name(depth), backend_fingerprint(depth)
    from evals.metrics.depth import DEFAULT_DPT, DptDepth

    source = settings.get("depth_weights") or DEFAULT_DPT
    depth = DptDepth.from_pretrained(source, device=_device(settings))
    return depth, "dpt", backend_fingerprint(depth, source)


def build_clip(settings: dict):
    if settings.get("_clip") is not None:
        clip = settings["_clip"]
        return clip, backend_fingerprint(clip)
    from evals.metrics.clip_score import load_clip

    clip = load_clip(settings.get("clip_variant", "clip_vitb32_cosine"), settings.get("clip_weights"),
                     model_name=settings.get("clip_model_name"), config_dir=settings.get("clip_config_dir"),
                     device=_device(settings))
    return clip, clip.fingerprint


def _detect_all(detector, frames: list, label_lists: list[list[str]]) -> list:
    batch = getattr(detector, "detect_batch", None)
    return _guarded(
        (lambda: batch(frames, label_lists)) if batch is not None
        else (lambda: [detector.detect(f, labels) for f, labels in zip(frames, label_lists)]),
        lambda i: detector.detect(frames[i], label_lists[i]),
        len(frames),
    )


def _depth_all(depth, images: list) -> list:
    batch = getattr(depth, "depth_batch", None)
    return _guarded(
        (lambda: batch(images)) if batch is not None
        else (lambda: [depth.depth_in_detector_frame(im) for im in images]),
        lambda i: depth.depth_in_detector_frame(images[i]),
        len(images),
    )


def _blip_questions(parse: cb.PromptParse, settings: dict) -> list[str]:
    if settings.get("question_filter", True):
        return list(parse.blip_questions)
    return cb.blip_questions(parse.noun_chunks, dropped=())


def _np_num(settings: dict) -> int:
    np_num = int(settings.get("np_num", cb.NP_NUM_CURRENT))
    if np_num < 1:
        raise ValueError(f"np_num must be >= 1, got {np_num}")
    return np_num


def _blip_scores(blip, images: list, questions: list[list[str]], np_num: int) -> list:
    """Per image: the BLIP-VQA product score, or the exception that image raised."""
    probs = _guarded(lambda: blip.question_probabilities(images, questions, np_num),
                     lambda i: blip.question_probabilities([images[i]], [questions[i]], np_num)[0], len(images))
    return [p if isinstance(p, Exception) else cb.blip_vqa_image_score(p, np_num) for p in probs]


def _labels(*names: str | None) -> list[str]:
    """Detector queries: the rule's object names after the person alias, de-duplicated, None dropped."""
    return list(dict.fromkeys(n for n in (cb.person_alias(x) for x in names) if n is not None))


# --------------------------------------------------------------------------------------------------
# Kinds
# --------------------------------------------------------------------------------------------------


def compbench_blip_vqa_kind(settings: dict, manifest: pd.DataFrame, cell: Path):
    """Color / Shape / Texture: per image the product of P(yes) over the prompt's first np_num questions."""
    _check_manifest(manifest)
    prompts = list(manifest["prompt"])
    val_files = _val_files(settings, "blip_vqa")
    parses = prompt_parses(prompts, val_files)
    np_num = _np_num(settings)
    questions = {p: _blip_questions(parse, settings) for p, parse in parses.items()}
    blip, fingerprint = build_blip(settings, "weights")

    scores, errors = np.full(len(prompts), np.nan), [None] * len(prompts)
    unreadable: list[int] = []
    for rows, images in _readable_chunks(manifest, cell, int(settings.get("chunk_size", DEFAULT_CHUNK)), errors,
                                         unreadable):
        results = _blip_scores(blip, images, [questions[prompts[i]] for i in rows], np_num)
        for j, result in enumerate(results):
            i = rows[j]
            if isinstance(result, Exception):
                errors[i] = _error(str(manifest["file"].iloc[i]), result)
            else:
                scores[i] = result
    _finish(scores, errors, len(unreadable))
    meta = {
        "scorer": f"compbench_blipvqa_np{np_num}" + ("_shapes_oracle" if settings.get("vqa") == "shapes_oracle" else ""),
        "weights_fingerprint": fingerprint, "higher_is_better": True,
        "backend": _backend_name(blip), "np_num": np_num,
        "question_filter": bool(settings.get("question_filter", True)),
        **parse_meta(val_files),
        "n_images_without_questions": int(sum(not questions[p] for p in prompts)),
        "n_unreadable": len(unreadable),
    }
    return scores, errors, meta


def _spatial_2d_meta_counts(found: list[tuple[bool, bool] | None]) -> dict:
    done = [f for f in found if f is not None]
    return {"n_no_object_detected": sum(not a and not b for a, b in done),
            "n_one_object_detected": sum(a != b for a, b in done),
            "n_both_objects_detected": sum(a and b for a, b in done)}


def _found_exact(dets, obj1, obj2) -> tuple[bool, bool]:
    labels = {d.label for d in dets}
    return cb.person_alias(obj1) in labels, cb.person_alias(obj2) in labels


def _found_substring(dets, obj1, obj2) -> tuple[bool, bool]:
    o1, o2 = cb.person_alias(obj1), cb.person_alias(obj2)
    return (o1 is not None and any(o1 in d.label for d in dets), o2 is not None and any(o2 in d.label for d in dets))


def compbench_spatial_2d_kind(settings: dict, manifest: pd.DataFrame, cell: Path):
    """2D spatial: first/last NOUN of the frozen parse, relation word, detections in the detector frame,
    `compbench.spatial_2d_image_score`."""
    _check_manifest(manifest)
    prompts = list(manifest["prompt"])
    val_files = _val_files(settings, "spatial_2d")
    parses = prompt_parses(prompts, val_files)
    detector, tag, fingerprint = build_detector(settings, "weights" if "detector_weights" not in settings
                                                else "detector_weights", "RS200")
    targets = {p: (*parse.objects_2d, cb.find_relation(p, cb.SPATIAL_2D_RELATIONS)) for p, parse in parses.items()}

    scores, errors = np.full(len(prompts), np.nan), [None] * len(prompts)
    found: list[tuple[bool, bool] | None] = [None] * len(prompts)
    unreadable: list[int] = []
    for rows, images in _readable_chunks(manifest, cell, int(settings.get("chunk_size", DEFAULT_CHUNK)), errors,
                                         unreadable):
        frames = [cb.to_detector_frame(image) for image in images]
        label_lists = [_labels(*targets[prompts[i]][:2]) for i in rows]
        for j, dets in enumerate(_detect_all(detector, frames, label_lists)):
            i = rows[j]
            name = str(manifest["file"].iloc[i])
            try:
                if isinstance(dets, Exception):
                    raise dets
                obj1, obj2, relation = targets[prompts[i]]
                scores[i] = cb.spatial_2d_image_score(obj1, obj2, relation, dets)
                found[i] = _found_exact(dets, obj1, obj2)
            except Exception as err:  # noqa: BLE001 - recorded as this image's error
                errors[i] = _error(name, err)
    _finish(scores, errors, len(unreadable))
    meta = {
        "scorer": f"compbench_spatial2d_{tag}", "weights_fingerprint": fingerprint, "higher_is_better": True,
        "detector": _backend_name(detector), **parse_meta(val_files),
        **_spatial_2d_meta_counts(found),
        "n_zero_scores": int(np.sum(scores == 0)),
        "n_images_without_relation_word": int(sum(targets[p][2] is None for p in prompts)),
        "n_unreadable": len(unreadable),
    }
    return scores, errors, meta


def compbench_spatial_3d_kind(settings: dict, manifest: pd.DataFrame, cell: Path):
    """3D spatial (++): first/last NOUN, relation in [in front of, behind, hidden], detections + inverse depth
    in the detector frame, `compbench.spatial_3d_image_score` (substring labels, no 0.5 cut-off)."""
    _check_manifest(manifest)
    prompts = list(manifest["prompt"])
    val_files = _val_files(settings, "spatial_3d")
    parses = prompt_parses(prompts, val_files)
    detector, det_tag, det_fp = build_detector(settings, "weights" if "detector_weights" not in settings
                                               else "detector_weights", "R50")
    depth, depth_tag, depth_fp = build_depth(settings)
    targets = {p: (*parse.objects_2d, cb.find_relation(p, cb.SPATIAL_3D_RELATIONS)) for p, parse in parses.items()}

    scores, errors = np.full(len(prompts), np.nan), [None] * len(prompts)
    found: list[tuple[bool, bool] | None] = [None] * len(prompts)
    unreadable: list[int] = []
    for rows, images in _readable_chunks(manifest, cell, int(settings.get("chunk_size", DEFAULT_CHUNK)), errors,
                                         unreadable):
        frames = [cb.to_detector_frame(image) for image in images]
        label_lists = [_labels(*targets[prompts[i]][:2]) for i in rows]
        detections = _detect_all(detector, frames, label_lists)
        depths = _depth_all(depth, images)
        for j, (frame, dets, dmap) in enumerate(zip(frames, detections, depths)):
            i = rows[j]
            name = str(manifest["file"].iloc[i])
            try:
                for result in (dets, dmap):
                    if isinstance(result, Exception):
                        raise result
                dmap = np.asarray(dmap, dtype=np.float32)
                if dmap.shape != (frame.height, frame.width):
                    raise ValueError(f"depth map of shape {dmap.shape}, expected the detector frame "
                                     f"{(frame.height, frame.width)}")
                obj1, obj2, relation = targets[prompts[i]]
                scores[i] = cb.spatial_3d_image_score(obj1, obj2, relation, dets, dmap)
                found[i] = _found_substring(dets, obj1, obj2)
            except Exception as err:  # noqa: BLE001 - recorded as this image's error
                errors[i] = _error(name, err)
    _finish(scores, errors, len(unreadable))
    meta = {
        "scorer": f"compbench_spatial3d_{det_tag}_{depth_tag}",
        "weights_fingerprint": combine_fingerprints({"detector": det_fp, "depth": depth_fp}),
        "higher_is_better": True, "detector": _backend_name(detector), "depth": _backend_name(depth),
        "fingerprints": {"detector": det_fp, "depth": depth_fp}, **parse_meta(val_files),
        **_spatial_2d_meta_counts(found),
        "n_images_without_relation_word": int(sum(targets[p][2] is None for p in prompts)),
        "n_unreadable": len(unreadable),
    }
    return scores, errors, meta


def numeracy_targets_for(parse: cb.PromptParse, table: cb.NounTable, table_source: str):
    """(objects, counts) from the frozen tokens and the noun table, cross-checked against the frozen
    extraction; a NumeracyParseError (upstream crash) comes back as the exception."""
    try:
        objects, counts = cb.numeracy_targets([t.text for t in parse.tokens], table)
    except cb.NumeracyParseError as err:
        return err
    if parse.numeracy_objects is not None and (tuple(objects), tuple(counts)) != (parse.numeracy_objects,
                                                                                 parse.numeracy_counts):
        raise ValueError(
            f"numeracy targets of {parse.prompt!r} from {table_source} ({objects}, {counts}) differ from the "
            f"frozen parse ({list(parse.numeracy_objects)}, {list(parse.numeracy_counts)}): the noun table or the "
            f"parse file changed; regenerate with tools/freeze_compbench_parse.py"
        )
    if not objects:
        return cb.NumeracyParseError(f"no countable object in {parse.prompt!r} (upstream ZeroDivisionError)")
    return objects, counts


def compbench_numeracy_kind(settings: dict, manifest: pd.DataFrame, cell: Path):
    """Numeracy (++): objects and counts from the frozen tokens + new_objects.txt, detections merged and
    counted by `compbench.numeracy_image_score`."""
    _check_manifest(manifest)
    prompts = list(manifest["prompt"])
    val_files = _val_files(settings, "numeracy")
    parses = prompt_parses(prompts, val_files)
    table_path = Path(settings.get("new_objects") or NEW_OBJECTS)
    table = cb.NounTable.from_file(table_path)
    targets = {p: numeracy_targets_for(parse, table, str(table_path)) for p, parse in parses.items()}
    detector, tag, fingerprint = build_detector(settings, "weights" if "detector_weights" not in settings
                                                else "detector_weights", "R50")

    scores, errors = np.full(len(prompts), np.nan), [None] * len(prompts)
    unreadable: list[int] = []
    n_none = n_full = 0
    for rows, images in _readable_chunks(manifest, cell, int(settings.get("chunk_size", DEFAULT_CHUNK)), errors,
                                         unreadable):
        ok = []
        for j in range(len(images)):
            target = targets[prompts[rows[j]]]
            if isinstance(target, Exception):  # the upstream evaluator would crash on this prompt
                errors[rows[j]] = (f"{manifest['file'].iloc[rows[j]]}: scoring failed: prompt {prompts[rows[j]]!r} "
                                   f"has no numeracy targets (the upstream evaluator crashes on it): {target}")
            else:
                ok.append(j)
        frames = [cb.to_detector_frame(images[j]) for j in ok]
        label_lists = [cb.numeracy_query_labels(targets[prompts[rows[j]]][0]) for j in ok]
        for j, dets in zip(ok, _detect_all(detector, frames, label_lists)):
            i = rows[j]
            try:
                if isinstance(dets, Exception):
                    raise dets
                objects, counts = targets[prompts[i]]
                scores[i] = cb.numeracy_image_score(objects, counts, dets)
                n_none += scores[i] == 0
                n_full += scores[i] == 1
            except Exception as err:  # noqa: BLE001 - recorded as this image's error
                errors[i] = _error(str(manifest["file"].iloc[i]), err)
    n_unparsable = sum(isinstance(targets[p], Exception) for p in prompts)
    _finish(scores, errors, len(unreadable))
    meta = {
        "scorer": f"compbench_numeracy_{tag}", "weights_fingerprint": fingerprint, "higher_is_better": True,
        "detector": _backend_name(detector), **parse_meta(val_files),
        "new_objects_sha256": path_fingerprint(table_path),
        "n_no_object_detected": int(n_none), "n_all_counts_correct": int(n_full),
        "n_images_unparsable_prompt": int(n_unparsable), "n_unreadable": len(unreadable),
    }
    return scores, errors, meta


def complex_groups(manifest: pd.DataFrame) -> list[str]:
    """Per row: `complex_group` from the row's metadata JSON when present (the prompt-set loader writes it),
    else recomputed as 3_in_1.py does from the shipped complex_val_spatial / complex_val_action lists."""
    lists = None
    groups = []
    metadata = manifest["metadata"] if "metadata" in manifest.columns else [None] * len(manifest)
    for prompt, meta in zip(manifest["prompt"], metadata):
        group = None
        if isinstance(meta, str) and meta:
            group = json.loads(meta).get("complex_group")
        elif isinstance(meta, dict):
            group = meta.get("complex_group")
        if group is None:
            if lists is None:
                lists = {g: (DATA_DIR / f).read_text(encoding="utf-8").splitlines()
                         for g, f in COMPLEX_GROUP_FILES.items()}
            group = cb.complex_group(prompt, lists["spatial"], lists["action"])
        if group not in COMPLEX_GROUPS:
            raise ValueError(f"complex_group {group!r} of prompt {prompt!r}; expected one of {COMPLEX_GROUPS}")
        groups.append(group)
    return groups


def compbench_complex_kind(settings: dict, manifest: pd.DataFrame, cell: Path):
    """3-in-1 per image: A = BLIP-VQA (np_num 8), S = 2D rule with the complex-mode object pair, C = CLIP
    raw cosine with the adjective-free text; (A+S)/2, (A+C)/2 or (A+S+C)/3 by the prompt's complex group.
    S is computed only for spatial / spatialaction prompts and C only for action / spatialaction prompts
    (the terms the group uses)."""
    _check_manifest(manifest)
    prompts = list(manifest["prompt"])
    val_files = _val_files(settings, "complex")
    parses = prompt_parses(prompts, val_files)
    groups = complex_groups(manifest)
    np_num = _np_num(settings)
    clip_text = settings.get("clip_text", "without_adjectives")
    if clip_text not in ("without_adjectives", "prompt"):
        raise ValueError(f"clip_text must be 'without_adjectives' or 'prompt', not {clip_text!r}")
    spatial_objects = settings.get("spatial_objects", "complex")
    if spatial_objects not in ("complex", "first_last"):
        raise ValueError(f"spatial_objects must be 'complex' or 'first_last', not {spatial_objects!r}")

    def pair(parse):
        if spatial_objects == "first_last":
            return parse.objects_2d
        objects = parse.objects_complex
        return (objects[0], objects[1]) if len(objects) == 2 else (None, None)

    questions = {p: _blip_questions(parse, settings) for p, parse in parses.items()}
    spatial = {p: (*pair(parse), cb.find_relation(p, cb.SPATIAL_2D_RELATIONS)) for p, parse in parses.items()}
    captions = {p: parse.text_without_adj if clip_text == "without_adjectives" else p for p, parse in parses.items()}
    need_s = [g in ("spatial", "spatialaction") for g in groups]
    need_c = [g in ("action", "spatialaction") for g in groups]

    blip, blip_fp = build_blip(settings, "blip_weights")
    detector, det_tag, det_fp = (build_detector(settings, "detector_weights", "RS200") if any(need_s)
                                 else (None, settings.get("detector", "owlv2"), "unused"))
    clip, clip_fp = build_clip(settings) if any(need_c) else (None, "unused")
    clip_batch = int(settings.get("clip_batch_size", 32))

    n = len(prompts)
    scores, errors = np.full(n, np.nan), [None] * n
    a_terms, s_terms, c_terms = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    found: list[tuple[bool, bool] | None] = [None] * n
    unreadable: list[int] = []
    for rows, images in _readable_chunks(manifest, cell, int(settings.get("chunk_size", DEFAULT_CHUNK)), errors,
                                         unreadable):
        failures: dict[int, Exception] = {}
        # A: BLIP-VQA on every image
        for j, result in enumerate(_blip_scores(blip, images, [questions[prompts[i]] for i in rows], np_num)):
            if isinstance(result, Exception):
                failures[j] = result
            else:
                a_terms[rows[j]] = result
        # S: 2D rule in complex mode where the group uses it (no object pair -> 0 without detection)
        s_rows = [j for j, i in enumerate(rows) if need_s[i]]
        detect_rows = [j for j in s_rows if any(spatial[prompts[rows[j]]][:2])]
        detections = dict(zip(detect_rows, _detect_all(
            detector, [cb.to_detector_frame(images[j]) for j in detect_rows],
            [_labels(*spatial[prompts[rows[j]]][:2]) for j in detect_rows])))
        for j in s_rows:
            obj1, obj2, relation = spatial[prompts[rows[j]]]
            dets = detections.get(j, [])
            if isinstance(dets, Exception):
                failures.setdefault(j, dets)
                continue
            try:
                s_terms[rows[j]] = cb.spatial_2d_image_score(obj1, obj2, relation, dets)
                found[rows[j]] = _found_exact(dets, obj1, obj2)
            except Exception as err:  # noqa: BLE001
                failures.setdefault(j, err)
        # C: CLIP raw cosine on the adjective-free text where the group uses it
        c_rows = [j for j, i in enumerate(rows) if need_c[i]]
        c_images, c_texts = [images[j] for j in c_rows], [captions[prompts[rows[j]]] for j in c_rows]
        c_values = _guarded(lambda: list(np.asarray(clip.score(c_images, c_texts, batch_size=clip_batch), float)),
                            lambda k: float(np.asarray(clip.score([c_images[k]], [c_texts[k]], batch_size=1))[0]),
                            len(c_rows))
        for j, value in zip(c_rows, c_values):
            if isinstance(value, Exception):
                failures.setdefault(j, value)
            else:
                c_terms[rows[j]] = float(value)
        for j in range(len(rows)):
            i = rows[j]
            if j in failures:
                errors[i] = _error(str(manifest["file"].iloc[i]), failures[j])
                continue
            scores[i] = cb.three_in_one(groups[i], a_terms[i], s_terms[i], c_terms[i])
    _finish(scores, errors, len(unreadable))

    def mean(values):
        values = values[np.isfinite(scores)]
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else None

    fingerprints = {"blip": blip_fp, "detector": det_fp, "clip": clip_fp}
    counts = _spatial_2d_meta_counts(found)
    meta = {
        "scorer": f"compbench_3in1_np{np_num}_{det_tag}", "weights_fingerprint": combine_fingerprints(fingerprints),
        "higher_is_better": True, "fingerprints": fingerprints, **parse_meta(val_files), "np_num": np_num,
        "clip_text": clip_text, "spatial_objects": spatial_objects,
        "blip": _backend_name(blip), "detector": None if detector is None else _backend_name(detector),
        "clip": None if clip is None else _backend_name(clip),
        "n_by_group": {g: int(sum(x == g for x in groups)) for g in COMPLEX_GROUPS},
        "mean_attribute": mean(a_terms), "mean_spatial": mean(s_terms), "mean_action": mean(c_terms),
        "n_spatial_without_object_pair": int(sum(need_s[i] and not any(spatial[prompts[i]][:2]) for i in range(n))),
        **{f"spatial_{k}": v for k, v in counts.items()},
        "n_truncated_captions": int(getattr(clip, "n_truncated", 0) or 0),
        "n_unreadable": len(unreadable),
    }
    return scores, errors, meta


KINDS = {
    "compbench_blip_vqa": compbench_blip_vqa_kind,
    "compbench_spatial_2d": compbench_spatial_2d_kind,
    "compbench_spatial_3d": compbench_spatial_3d_kind,
    "compbench_numeracy": compbench_numeracy_kind,
    "compbench_complex": compbench_complex_kind,
}
