"""Benchmark prompt loaders: protocol file → the prompt-set frame generation consumes.

The frame is `pixart.prompts.expand_samples`' (sample_id, prompt_id, image_index, prompt, seed, height,
width, metadata) with the protocol's images per prompt, seed rule and resolution; `frame.attrs["protocol"]`
(kept by parquet) names benchmark@version, subset and the sha256 of every source file read.

Also here, because each belongs to one benchmark's data: the COCO-30K list builder and reference image
set, the SAM subset freezer, and the export of samples to T2I-CompBench's original file naming.
"""
import csv
import fnmatch
import io
import json
import os
import random
import re
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evals.benchmarks.protocols import DataIntegrityError, Protocol, ProtocolError, load_protocol, sha256_file
from pixart.prompts import expand_samples, read_prompt_file


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says what to give instead."""


class UserDataError(FileNotFoundError):
    """Data the user must supply (not redistributable or too large to ship) is absent or wrong."""


# ---------------------------------------------------------------- prompt sets


def load_prompts(benchmark: str | Path | Protocol, subset: str | None = None, *, source: Path | None = None,
                 images: Path | None = None, limit: int | None = None,
                 height: int | None = None, width: int | None = None) -> pd.DataFrame:
    """The prompt set of one benchmark subset.

    source: user-supplied data where the protocol ships none (WISE folder, SAM list, custom prompt file,
    a self-built COCO list). images: SA-1B folder, to re-verify a SAM list against its images.
    height/width override the protocol's resolution (recorded in the frame's columns).
    """
    protocol = benchmark if isinstance(benchmark, Protocol) else load_protocol(benchmark)
    subset, entry = protocol.subset(subset)
    files, rows = _read_source(protocol, subset, entry, source, images)
    if limit is not None:
        if limit < 1:  # [:-1] dropped the last prompt without a word
            raise ValueError(f"limit {limit}: give the number of prompts to keep (at least 1), or none")
        rows = rows[:limit]
    resolution = protocol.spec["resolution"]
    frame = expand_samples(rows, protocol.images_per_prompt, protocol.seed_rule, protocol.seed_base,
                           height or resolution["height"], width or resolution["width"])
    frame.attrs["protocol"] = {"benchmark": protocol.name, "version": protocol.version, "subset": subset,
                               "sources": files, "limit": limit}
    return frame


def _read_source(protocol: Protocol, subset: str, entry: dict, source: Path | None,
                 images: Path | None) -> tuple[dict, list[dict]]:
    """({file name: sha256}, rows with prompt + metadata JSON)."""
    if "file" in entry:
        if source is not None:
            raise ProtocolError(f"{protocol.tag} subset {subset!r} uses its shipped file {entry['file']}; "
                                "drop --source (a different prompt list is a different protocol)")
        path = protocol.shipped_file(entry)
        files = {path.name: entry["sha256"]}
    elif "user_files" in entry:
        return _read_wise(protocol, entry, source)
    else:
        if source is None:
            raise UserDataError(f"{protocol.tag} subset {subset!r} needs --source: {entry['user']}. "
                                f"{entry.get('description', '')}".strip())
        path = Path(source)
        if not path.is_file():
            raise UserDataError(f"{path} does not exist ({protocol.tag} subset {subset!r} expects {entry['user']})")
        files = {path.name: sha256_file(path)}
    fmt = entry["format"]
    if fmt == "prompt_file":
        rows = read_prompt_file(path, entry.get("column", "text"))
        _check_list_shape(protocol, subset, entry, path, rows)
    elif fmt == "compbench_lines":
        rows = _compbench_rows(protocol, subset, entry, path)
    elif fmt == "geneval_jsonl":
        rows = _geneval_rows(path)
    elif fmt == "wise_json":
        rows = _wise_rows(protocol, _wise_entries(path))
    else:  # sam_list
        rows = [{"prompt": r["caption"], "metadata": json.dumps({"file_name": r["file_name"]})}
                for r in load_sam_subset(path, images, entry.get("n"))]
    return files, rows


def _check_list_shape(protocol: Protocol, subset: str, entry: dict, path: Path, rows: list[dict]):
    """A user's list is the protocol's only with its size and distinct images (30K images, one caption each)."""
    where = f"{path} ({protocol.tag} subset {subset!r}: {entry.get('description', '').strip()})"
    if "n" in entry and len(rows) != entry["n"]:
        raise DataIntegrityError(f"{where}: {len(rows):,} prompts, the subset has {entry['n']:,}")
    column = entry.get("distinct")
    if column:
        values = [json.loads(r.get("metadata", "{}")).get(column) for r in rows]
        if None in values:
            raise DataIntegrityError(f"{where}: row {values.index(None) + 1} has no {column!r} column")
        repeated = sorted(v for v, count in Counter(values).items() if count > 1)
        if repeated:
            raise DataIntegrityError(f"{where}: {len(repeated)} {column} values repeat (first: {repeated[:3]}); "
                                     f"each must appear once")


# ---------------------------------------------------------------- T2I-CompBench


def compbench_prompts(path: Path) -> list[str]:
    """As the official generator: each line up to the first TAB, stripped; empty lines dropped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [p for p in (line.split("\t")[0].strip() for line in lines) if p]


def _compbench_rows(protocol: Protocol, subset: str, entry: dict, path: Path) -> list[dict]:
    groups = {group: _complex_keys(protocol, listed) for group, listed in entry.get("groups", {}).items()}

    def metadata(prompt: str) -> str:
        meta = {"category": subset}
        if groups:
            key = _complex_key(prompt)
            meta["complex_group"] = next((g for g, keys in groups.items() if key in keys), "spatialaction")
        return json.dumps(meta)

    return [{"prompt": p, "metadata": metadata(p)} for p in compbench_prompts(path)]


def _complex_key(prompt: str) -> str:
    """3_in_1.py picks a complex prompt's weighting by its lower-cased text before the first "."."""
    return prompt.lower().split(".")[0]


def _complex_keys(protocol: Protocol, subset: str) -> set[str]:
    return {_complex_key(p) for p in compbench_prompts(protocol.shipped_file(protocol.subset(subset)[1]))}


def compbench_file_name(prompt: str, line: int, k: int, images_per_prompt: int = 10) -> str:
    """The official sample name: `{prompt}_{idx:06d}.png`, idx = images_per_prompt·line + k."""
    return f"{prompt}_{images_per_prompt * line + k:06d}.png"


def export_t2i_compbench(prompts: pd.DataFrame, samples_dir: Path, out_dir: Path, *,
                         images_per_prompt: int = 10, mode: str = "symlink") -> int:
    """Link (or copy) `{sample_id}.png` of a sample folder to the original naming in one flat folder,
    so the upstream scoring scripts run unchanged. Returns the number of files exported."""
    samples_dir, out_dir = Path(samples_dir), Path(out_dir)
    plan = {}
    for row in prompts.itertuples():
        if "/" in row.prompt or "\0" in row.prompt:
            raise ExportError(f"prompt {row.prompt!r} ({row.sample_id}) cannot be a file name")
        name = compbench_file_name(row.prompt, int(row.prompt_id[1:]), row.image_index, images_per_prompt)
        plan[name] = samples_dir / f"{row.sample_id}.png"
    _check_export(plan, samples_dir, mode, prompts)
    # upstream scorers read every image in the folder, so leftovers from another run would be scored
    _refuse_strays(out_dir, {p.name for p in out_dir.glob("*.png")} - set(plan))
    return _link_all(plan, out_dir, mode)


def export_geneval(prompts: pd.DataFrame, samples_dir: Path, out_dir: Path, *, mode: str = "symlink") -> int:
    """Write GenEval's own layout, which its evaluation/evaluate_images.py reads unchanged:
    `{index:05d}/metadata.jsonl` (the prompt's metadata line, one JSON object) and
    `{index:05d}/samples/{k:05d}.png`, index = the prompt's line in evaluation_metadata.jsonl.
    Returns the number of images exported."""
    samples_dir, out_dir = Path(samples_dir), Path(out_dir)
    plan, metadata = {}, {}
    for row in prompts.itertuples():
        meta = json.loads(row.metadata) if row.metadata else {}
        if not {"tag", "include"} <= set(meta):
            raise ExportError(f"prompt {row.prompt_id} ({row.prompt!r}) has no GenEval metadata (tag, include): "
                             f"export a prompt set of the geneval protocol (or a file in its jsonl format)")
        folder = f"{int(row.prompt_id[1:]):05d}"
        metadata[folder] = {**meta, "prompt": row.prompt}
        plan[f"{folder}/samples/{row.image_index:05d}.png"] = samples_dir / f"{row.sample_id}.png"
    _check_export(plan, samples_dir, mode, prompts)
    # upstream scores every all-digit folder and every file of its samples/ whose name starts with digits + ".png"
    found = set()
    for folder in (d for d in out_dir.glob("*") if d.is_dir() and d.name.isdigit()):
        if folder.name in metadata:
            found |= {f"{folder.name}/samples/{p.name}" for p in (folder / "samples").glob("*")
                      if re.match(r"\d+\.png", p.name)}
        else:
            found.add(f"{folder.name}/")
    _refuse_strays(out_dir, found - set(plan))
    for folder, meta in metadata.items():
        (out_dir / folder / "samples").mkdir(parents=True, exist_ok=True)
        (out_dir / folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return _link_all(plan, out_dir, mode)


def _check_export(plan: dict[str, Path], samples_dir: Path, mode: str, prompts: pd.DataFrame):
    """Refuse a bad mode, missing samples, and samples whose PNG records another prompt than the row exported
    under their name: sample ids repeat across prompt sets, so a --samples folder of another cell would
    otherwise be exported, and scored upstream, under these prompts."""
    from pixart.pngio import prompt_sha, read_meta

    if mode not in ("symlink", "hardlink", "copy"):
        raise ExportError(f"mode must be symlink, hardlink or copy, not {mode!r}")
    missing = [str(p) for p in plan.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(plan)} samples are missing in {samples_dir} "
                                f"(first: {missing[:3]}); generate them before exporting")
    other = []
    for row in prompts.itertuples():
        meta = read_meta(samples_dir / f"{row.sample_id}.png", verify=False)  # images without it: not checked
        if meta and meta.get("prompt_sha") not in (None, prompt_sha(row.prompt)):
            other.append(f"{row.sample_id}.png")
    if other:
        raise ExportError(f"{len(other)} of {len(plan)} images in {samples_dir} were generated from other prompts than "
                         f"these (first: {other[:3]}); give --samples the cell generated from this prompt set")


def _refuse_strays(out_dir: Path, stray: set[str]):
    if stray:
        raise FileExistsError(f"{out_dir} holds {len(stray)} entries that are not part of this export "
                              f"(first: {sorted(stray)[:3]}); use an empty folder")


def _link_all(plan: dict[str, Path], out_dir: Path, mode: str) -> int:
    """Link or copy every planned sample (name relative to out_dir → source image)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, target in plan.items():
        link = out_dir / name
        link.unlink(missing_ok=True)
        if mode == "symlink":
            link.symlink_to(target.resolve())
        elif mode == "hardlink":
            os.link(target, link)
        else:
            shutil.copyfile(target, link)
    return len(plan)


# ---------------------------------------------------------------- GenEval


def _geneval_rows(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            entry = json.loads(line)
            meta = {k: v for k, v in entry.items() if k != "prompt"}
            rows.append({"prompt": entry["prompt"].strip(), "metadata": json.dumps(meta, sort_keys=True)})
    return rows


# ---------------------------------------------------------------- WISE


def _read_wise(protocol: Protocol, entry: dict, source: Path | None) -> tuple[dict, list[dict]]:
    upstream = protocol.spec["upstream"]
    names = [f["name"] for f in entry["user_files"]]
    how = (f"WISE prompts are not shipped (the upstream repository has no license). Get them from "
           f"{upstream['url']} at commit {upstream['commit']}, folder {upstream['path']}: "
           f"git clone {upstream['url']} && git -C WISE checkout {upstream['commit']}; "
           f"then pass --source WISE/{upstream['path'].rstrip('/')} (files needed: {', '.join(names)}).")
    if source is None:
        raise UserDataError(how)
    folder = _wise_folder(Path(source), names)
    if folder is None:
        raise UserDataError(f"{source}: the WISE prompt files are absent. {how}")
    files, rows = {}, []
    for spec in entry["user_files"]:
        path = folder / spec["name"]
        if not path.is_file():
            raise UserDataError(f"{path} is missing. {how}")
        actual = sha256_file(path)
        if actual != spec["sha256"]:
            raise DataIntegrityError(
                f"{path}: sha256 {actual} does not match the expected {spec['sha256']} "
                f"({upstream['path']}{spec['name']} at {upstream['repository']}@{upstream['commit']}). "
                "Download that exact file again; another version of the prompts is another protocol.")
        files[spec["name"]] = actual
        rows.extend(_wise_entries(path))
    return files, _wise_rows(protocol, rows)


def _wise_folder(source: Path, names: list[str]) -> Path | None:
    """The folder holding the WISE json files: `source` itself, or a WISE checkout's WISE_legacy/data/ or data/."""
    for folder in (source, source / "WISE_legacy" / "data", source / "data"):
        if any((folder / n).is_file() for n in names):
            return folder
    return None


def _wise_entries(path: Path) -> list[dict]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataIntegrityError(f"{path}: not a JSON file ({err})") from None
    for i, e in enumerate(entries):
        missing = {"Prompt", "Explanation", "prompt_id"} - set(e)
        if missing:
            raise DataIntegrityError(f"{path}: entry {i} lacks {sorted(missing)}")
    return entries


def _wise_rows(protocol: Protocol, entries: list[dict]) -> list[dict]:
    categories = protocol.spec["categories"]
    ids = [int(e["prompt_id"]) for e in entries]
    if len(set(ids)) != len(ids):
        raise DataIntegrityError(f"{protocol.tag}: duplicate WISE prompt_id values in the prompt files")

    def category(wise_id: int) -> str:
        for name, c in categories.items():
            if c["first_id"] <= wise_id <= c["last_id"]:
                return name
        raise DataIntegrityError(f"WISE prompt_id {wise_id} lies outside every category range of {protocol.path}")

    rows = []
    for e in sorted(entries, key=lambda e: int(e["prompt_id"])):
        wise_id = int(e["prompt_id"])
        meta = {"wise_id": wise_id, "category": category(wise_id), "Category": e.get("Category"),
                "Subcategory": e.get("Subcategory"), "Explanation": e["Explanation"]}
        rows.append({"prompt": e["Prompt"].strip(), "metadata": json.dumps(meta, ensure_ascii=False)})
    return rows


# ---------------------------------------------------------------- COCO-30K


def build_coco30k(captions_json: Path, seed: int, n: int = 30_000) -> list[dict]:
    """Draw `n` distinct images from a COCO captions file and one caption of each, deterministically
    under `seed` (rows: file_name, text; ordered by image id)."""
    data = json.loads(Path(captions_json).read_text(encoding="utf-8"))
    names = {img["id"]: img["file_name"] for img in data["images"]}
    captions: dict[int, list[tuple[int, str]]] = {}
    for ann in data["annotations"]:
        captions.setdefault(ann["image_id"], []).append((ann["id"], ann["caption"].strip()))
    ids = sorted(i for i in names if captions.get(i))
    if len(ids) < n:
        raise ValueError(f"{captions_json}: only {len(ids)} captioned images, cannot draw {n}")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(ids, n))
    return [{"file_name": names[i], "text": rng.choice(sorted(captions[i]))[1]} for i in chosen]


def write_caption_list(rows: list[dict], out: Path) -> str:
    """Write a file_name,text csv (the shipped list's format); returns its sha256."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["file_name", "text"], lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    return sha256_file(out)


@dataclass
class ImageSet:
    """Reference images in a folder or a zip, addressed by file name."""
    root: Path
    names: list[str]
    members: dict[str, str]   # file name → path inside the zip or the folder

    def __len__(self) -> int:
        return len(self.names)

    def iter_bytes(self):
        """(name, bytes) for every image, opening a zip only once."""
        if self.root.is_dir():
            for name in self.names:
                yield name, (self.root / self.members[name]).read_bytes()
            return
        with zipfile.ZipFile(self.root) as archive:
            for name in self.names:
                yield name, archive.read(self.members[name])


def coco_reference_images(location: Path | None, file_names: list[str] | None = None,
                          protocol: Protocol | None = None) -> ImageSet:
    """COCO val2014 images from the user's folder or zip: all of them (the protocol default), or only
    `file_names` (the images whose captions were generated)."""
    protocol = protocol or load_protocol("coco30k")
    ref = protocol.spec["reference"]
    how = (f"Download {ref['download']} (about 6.2 GB, {ref['images']:,} images) and pass the zip itself "
           "or its extracted val2014/ folder as the COCO reference location.")
    if location is None or not Path(location).exists():
        where = "no location given" if location is None else f"{location} does not exist"
        raise UserDataError(f"COCO val2014 reference images: {where}. {how}")
    location = Path(location)
    if location.is_dir():
        members = {p.name: str(p.relative_to(location)) for p in location.rglob(ref["pattern"])}
    elif zipfile.is_zipfile(location):
        with zipfile.ZipFile(location) as archive:
            members = {Path(m).name: m for m in archive.namelist() if fnmatch.fnmatch(Path(m).name, ref["pattern"])}
    else:
        raise UserDataError(f"{location} is neither a folder nor a zip file. {how}")
    if file_names is None:
        if len(members) != ref["images"]:
            raise UserDataError(f"{location}: found {len(members):,} {ref['pattern']} images, the protocol's "
                                f"reference is all {ref['images']:,} (incomplete download?). {how}")
        names = sorted(members)
    else:
        names = sorted(set(file_names))
        missing = [n for n in names if n not in members]
        if missing:
            raise UserDataError(f"{location}: {len(missing)} of the {len(names)} listed images are absent "
                                f"(first: {missing[:3]}). {how}")
    return ImageSet(root=location, names=names, members={n: members[n] for n in names})


# ---------------------------------------------------------------- SAM (SA-1B)

SAM_LIST_COLUMNS = ["file_name", "image_sha256", "caption"]


def _sam_caption(image: Path) -> str | None:
    path = image.with_suffix(".txt")
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def freeze_sam_subset(folder: Path, n: int, seed: int, out: Path) -> str:
    """Draw `n` captioned SA-1B images (`sa_*.jpg` with `sa_*.txt` beside each) from `folder`, deterministic
    under `seed`, and write the list (file_name, image_sha256, caption). Returns the list's sha256."""
    folder = Path(folder)
    candidates = sorted(p for p in folder.glob("*.jpg") if p.with_suffix(".txt").is_file())
    if len(candidates) < n:
        raise UserDataError(f"{folder}: {len(candidates)} images with a caption file (IMAGE.jpg + IMAGE.txt); "
                            f"{n} needed")
    chosen = sorted(random.Random(seed).sample(candidates, n))
    rows = [{"file_name": p.name, "image_sha256": sha256_file(p), "caption": _sam_caption(p)} for p in chosen]
    empty = [r["file_name"] for r in rows if not r["caption"]]
    if empty:
        raise UserDataError(f"{folder}: empty caption files for {empty[:3]} ({len(empty)} in all)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, SAM_LIST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return sha256_file(out)


def load_sam_subset(list_file: Path, folder: Path | None = None, n: int | None = None) -> list[dict]:
    """Read a frozen SAM list; check its shape, and with `folder` every image's sha256 and caption."""
    list_file = Path(list_file)
    text = list_file.read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames != SAM_LIST_COLUMNS:
        raise DataIntegrityError(f"{list_file}: columns {reader.fieldnames}, expected {SAM_LIST_COLUMNS} "
                                 "(write the list with freeze-sam)")
    rows = list(reader)
    if n is not None and len(rows) != n:
        raise DataIntegrityError(f"{list_file}: {len(rows)} images, the subset needs {n}")
    if len({r["file_name"] for r in rows}) != len(rows):
        raise DataIntegrityError(f"{list_file}: repeated file names")
    if folder is not None:
        for r in rows:
            image = Path(folder) / r["file_name"]
            if not image.is_file():
                raise UserDataError(f"{image} (listed in {list_file}) is missing")
            if sha256_file(image) != r["image_sha256"]:
                raise DataIntegrityError(f"{image}: sha256 differs from {list_file}; "
                                         "the image changed since the freeze")
            if _sam_caption(image) != r["caption"]:
                raise DataIntegrityError(f"{image.with_suffix('.txt')}: caption differs from {list_file}")
    return rows


def check_reference_names(protocol_tag: str, reference: str, names: list[str], listed: list[str]):
    """A fidelity reference must hold the protocol's reference set and nothing else: all 40,504 COCO val2014
    images for coco30k, exactly the prompt set's listed images for sam (`listed`: their file names). Other
    protocols (shapes, custom prompt files) define no reference set. Checks names; contents by their sha256 are
    checked when the SAM prompt set is built with --images."""
    name = protocol_tag.split("@")[0]
    if name not in ("coco30k", "sam"):
        return
    found = [Path(n).name for n in names]
    if name == "coco30k":
        ref = load_protocol("coco30k").spec["reference"]
        matching = {n for n in found if fnmatch.fnmatch(n, ref["pattern"])}
        problems = ([f"{len(matching):,} distinct {ref['pattern']} images, the protocol's reference is all "
                     f"{ref['images']:,} (incomplete download?)"] if len(matching) != ref["images"] else [])
        others = [n for n in found if n not in matching]
        if others:
            problems.append(f"{len(others):,} other images (first: {others[:3]}) that are not the reference set")
        how = f"pass the {ref['download']} zip or its extracted val2014/ folder"
    else:
        expected = set(listed)
        missing, extra = sorted(expected - set(found)), sorted(set(found) - expected)
        problems = ([f"{len(missing):,} listed images are absent (first: {missing[:3]})"] if missing else []) + \
                   ([f"{len(extra):,} images are not in the list (first: {extra[:3]})"] if extra else [])
        problems += ["an image name appears twice"] if len(found) != len(set(found)) else []
        how = "copy exactly the list's images into a folder of their own (see workflows/config/paper-ablation.yaml)"
    if problems:
        raise UserDataError(f"FID reference {reference} for {protocol_tag}: " + "; ".join(problems) + f". Fix: {how}")


def sam_reference_images(list_file: Path, folder: Path) -> ImageSet:
    rows = load_sam_subset(list_file, folder)
    names = [r["file_name"] for r in rows]
    return ImageSet(root=Path(folder), names=names, members={n: n for n in names})
