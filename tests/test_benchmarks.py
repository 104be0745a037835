"""Benchmark protocol files and prompt loaders: shipped data hashes, seed rules, builders, user data checks."""
import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from evals.benchmarks import loaders
from evals.benchmarks.__main__ import main as cli
from evals.benchmarks.protocols import (DataIntegrityError, ProtocolError, list_protocols, load_protocol,
                                        sha256_file)

BENCH = Path(__file__).resolve().parent.parent / "evals" / "benchmarks"
COLUMNS = ["sample_id", "prompt_id", "image_index", "prompt", "seed", "height", "width", "metadata"]


def _protocol_copy(tmp_path: Path, name: str, change) -> Path:
    """A protocol file changed by `change(spec)`, written beside a copy of nothing else."""
    spec = yaml.safe_load((BENCH / f"{name}.yaml").read_text())
    change(spec)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ------------------------------------------------------------ protocol files and shipped data


def test_every_protocol_loads_and_every_shipped_file_matches_its_hash():
    assert list_protocols() == ["coco30k", "custom", "geneval", "sam", "shapes", "t2i_compbench", "wise"]
    checked = 0
    for name in list_protocols():
        protocol = load_protocol(name)
        for entry in protocol.spec["sources"].values():
            if "file" in entry:
                assert sha256_file(protocol.shipped_file(entry)) == entry["sha256"]
                checked += 1
        for key in protocol.spec.get("auxiliary", {}):
            protocol.auxiliary_file(key)
    assert checked == 21
    shipped = sorted(p.name for p in (BENCH / "data").iterdir() if p.is_dir())
    assert shipped == ["coco30k", "geneval", "shapes", "t2i_compbench", "t2i_compbench_parse"]
    for folder in shipped:  # every shipped data folder says where it comes from and under which terms
        assert (BENCH / "data" / folder / "LICENSE").is_file() and (BENCH / "data" / folder / "SOURCE.md").is_file()
    assert not (BENCH / "data" / "wise").exists()   # no licence: never shipped


def test_a_modified_data_file_fails_naming_file_and_hash(tmp_path):
    shutil.copy(BENCH / "t2i_compbench.yaml", tmp_path)
    shutil.copytree(BENCH / "data/t2i_compbench", tmp_path / "data/t2i_compbench")
    with open(tmp_path / "data/t2i_compbench/shape_val.txt", "a") as handle:
        handle.write("\na purple hexagon\n")
    with pytest.raises(DataIntegrityError, match=r"shape_val\.txt: sha256 .* does not match the expected "
                                                 r"37e1a276906c7ea9516cbd7ac8501be896006c0c17ca7344f260562834455bae"):
        loaders.load_prompts(tmp_path / "t2i_compbench.yaml", "shape")
    assert len(loaders.load_prompts(tmp_path / "t2i_compbench.yaml", "texture")) == 3000


def test_protocol_errors_name_the_key(tmp_path):
    with pytest.raises(ProtocolError, match="'seeds' was unexpected"):
        load_protocol(_protocol_copy(tmp_path, "geneval", lambda s: s.update(seeds=1)))
    with pytest.raises(ProtocolError, match="version 2 has no changelog line"):
        load_protocol(_protocol_copy(tmp_path, "geneval", lambda s: s.update(version=2)))
    with pytest.raises(ProtocolError, match="no subset 'colour'.*'color'"):
        loaders.load_prompts("t2i_compbench", "colour")
    with pytest.raises(ProtocolError, match="choose a subset"):
        loaders.load_prompts("t2i_compbench")
    with pytest.raises(ProtocolError, match="known benchmarks"):
        load_protocol("imagenet")


# ------------------------------------------------------------ T2I-CompBench


def test_t2i_compbench_seeds_and_the_legacy_colour_file():
    frame = loaders.load_prompts("t2i_compbench", "color")
    assert list(frame.columns) == COLUMNS and len(frame) == 3000
    assert frame.groupby("prompt_id")["seed"].apply(list).map(lambda s: s == list(range(42, 52))).all()
    assert frame["sample_id"].iloc[13] == "p000001_03"
    legacy = "1e37a12c1861bf6b11623eaffb0bf6d6eeea9702caf45b95d040f1721bba7f4f"
    assert frame.attrs["protocol"]["sources"] == {"color_val.txt": legacy}
    current = loaders.load_prompts("t2i_compbench", "color_current")
    changed = sorted(int(p[1:]) for p, a, b in zip(frame["prompt_id"], frame["prompt"], current["prompt"]) if a != b)
    assert sorted(set(changed)) == [227, 228, 271, 287, 299]
    assert frame.drop_duplicates("prompt_id")["prompt"].nunique() == 295


def test_t2i_compbench_categories_and_complex_groups():
    counts = {s: loaders.load_prompts("t2i_compbench", s)["prompt_id"].nunique()
              for s in ("shape", "texture", "spatial", "non_spatial", "3d_spatial", "numeracy",
                        "complex_spatial", "complex_action", "complex_spatialaction")}
    assert counts == {"shape": 300, "texture": 300, "spatial": 300, "non_spatial": 300, "3d_spatial": 300,
                      "numeracy": 300, "complex_spatial": 58, "complex_action": 212, "complex_spatialaction": 30}
    complex_ = loaders.load_prompts("t2i_compbench", "complex").drop_duplicates("prompt_id")
    groups = complex_["metadata"].map(lambda m: json.loads(m)["complex_group"]).value_counts().to_dict()
    assert groups == {"action": 212, "spatial": 58, "spatialaction": 30}


def test_compbench_prompt_is_the_text_before_the_first_tab(tmp_path):
    path = tmp_path / "x_val.txt"
    path.write_text("  a red cube\tcolor\textra\n\n a blue ball \nlast line without newline")
    assert loaders.compbench_prompts(path) == ["a red cube", "a blue ball", "last line without newline"]


def _sample_folder(frame: pd.DataFrame, tmp_path: Path) -> Path:
    """A cell folder with one `{sample_id}.png` per row, each holding its own sample id (to trace the links)."""
    samples = tmp_path / "samples"
    samples.mkdir()
    for sample_id in frame["sample_id"]:
        (samples / f"{sample_id}.png").write_bytes(sample_id.encode())
    return samples


def test_export_uses_the_original_naming(tmp_path, cli_error):
    frame = loaders.load_prompts("t2i_compbench", "color", limit=2)
    samples = _sample_folder(frame, tmp_path)
    out = tmp_path / "export"
    assert loaders.export_t2i_compbench(frame, samples, out) == 20
    first, second = frame["prompt"].iloc[0], frame["prompt"].iloc[10]
    assert first == "a green bench and a blue bowl"
    assert (out / f"{first}_000000.png").read_bytes() == b"p000000_00"
    assert (out / f"{second}_000013.png").read_bytes() == b"p000001_03"
    assert len(list(out.iterdir())) == 20
    cli(["export-t2i-compbench", "--prompts", str(_parquet(frame, tmp_path)), "--samples", str(samples),
         "--out", str(tmp_path / "copied"), "--mode", "copy"])
    assert not (tmp_path / "copied" / f"{first}_000009.png").is_symlink()
    (out / "stale_000999.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="stale_000999.png"):
        loaders.export_t2i_compbench(frame, samples, out)
    (samples / "p000001_09.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 20 samples are missing"):
        loaders.export_t2i_compbench(frame, samples, tmp_path / "other")
    # from the command line each of these is one error line, not a traceback
    prompts = str(_parquet(frame, tmp_path))
    for args, message in ((["--prompts", prompts, "--samples", str(samples), "--out", str(tmp_path / "other")],
                           "1 of 20 samples are missing"),
                          (["--prompts", str(tmp_path / "none.parquet"), "--samples", str(samples), "--out",
                            str(tmp_path / "other")], f"{tmp_path / 'none.parquet'}: no such file"),
                          (["--prompts", prompts, "--samples", str(samples), "--out", str(out)], "stale_000999.png")):
        if "stale" in message:  # the samples complete again: the stray file is what stops this one
            (samples / "p000001_09.png").write_bytes(b"p000001_09")
        assert message in cli_error(cli, ["export-t2i-compbench", *args])


def test_export_refuses_images_generated_from_other_prompts(tmp_path):
    # sample ids repeat across prompt sets: another cell's folder would be exported under these prompts' names
    from PIL import Image

    from pixart.pngio import prompt_sha, write_png

    frame = loaders.load_prompts("t2i_compbench", "color", limit=1)
    samples = tmp_path / "samples"
    for row in frame.itertuples():
        prompt = "another prompt set's caption" if row.image_index == 3 else row.prompt
        write_png(Image.new("RGB", (8, 8)), samples / f"{row.sample_id}.png",
                  {"sample_id": row.sample_id, "prompt_sha": prompt_sha(prompt)})
    with pytest.raises(ValueError, match=r"1 of 10 images in .* were generated from other prompts than these "
                                         r"\(first: \['p000000_03.png'\]\); give --samples the cell"):
        loaders.export_t2i_compbench(frame, samples, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    write_png(Image.new("RGB", (8, 8)), samples / "p000000_03.png",
              {"sample_id": "p000000_03", "prompt_sha": prompt_sha(frame["prompt"].iloc[3])})
    assert loaders.export_t2i_compbench(frame, samples, tmp_path / "out") == 10


def _geneval_discovery(root: Path) -> dict:
    """What GenEval's evaluation/evaluate_images.py reads from a folder: every all-digit subfolder, its
    metadata.jsonl through json.load, and the files of its samples/ whose names match r"\\d+\\.png"."""
    import re

    found = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and folder.name.isdigit():
            with open(folder / "metadata.jsonl") as fh:
                metadata = json.load(fh)
            images = sorted(p.name for p in (folder / "samples").iterdir()
                            if p.is_file() and re.match(r"\d+\.png", p.name))
            found[folder.name] = (metadata, images)
    return found


def test_geneval_export_is_the_layout_its_evaluator_reads(tmp_path):
    frame = loaders.load_prompts("geneval", limit=3)
    samples = _sample_folder(frame, tmp_path)
    out = tmp_path / "export"
    assert loaders.export_geneval(frame, samples, out) == 12
    lines = (BENCH / "data/geneval/evaluation_metadata.jsonl").read_text().splitlines()[:3]
    four = [f"{k:05d}.png" for k in range(4)]
    assert _geneval_discovery(out) == {f"{i:05d}": (json.loads(line), four) for i, line in enumerate(lines)}
    assert (out / "00001/samples/00002.png").read_bytes() == b"p000001_02"
    cli(["export-geneval", "--prompts", str(_parquet(frame, tmp_path)), "--samples", str(samples),
         "--out", str(tmp_path / "copied"), "--mode", "copy"])
    assert not (tmp_path / "copied/00002/samples/00003.png").is_symlink()
    assert _geneval_discovery(tmp_path / "copied") == _geneval_discovery(out)
    # the evaluator scores every digit folder and every image it finds: leftovers are refused, not mixed in
    (out / "00099").mkdir()
    with pytest.raises(FileExistsError, match="00099/"):
        loaders.export_geneval(frame, samples, out)
    (out / "00099").rmdir()
    (out / "00000/samples/00001.png.bak").write_bytes(b"")  # re.match(r"\d+\.png") takes it too
    with pytest.raises(FileExistsError, match="00000/samples/00001.png.bak"):
        loaders.export_geneval(frame, samples, out)
    with pytest.raises(ValueError, match="p000000 .* has no GenEval metadata"):
        loaders.export_geneval(loaders.load_prompts("t2i_compbench", "color", limit=1), samples, tmp_path / "x")
    (samples / "p000002_03.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 12 samples are missing"):
        loaders.export_geneval(frame, samples, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def _parquet(frame: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "prompts.parquet"
    frame.to_parquet(path, index=False)
    return path


# ------------------------------------------------------------ GenEval, custom, CLI


def test_geneval_counts_and_metadata():
    frame = loaders.load_prompts("geneval")
    assert len(frame) == 553 * 4 and frame["prompt_id"].nunique() == 553
    assert set(frame["seed"]) == {42, 43, 44, 45}
    meta = frame.drop_duplicates("prompt_id")["metadata"].map(json.loads)
    assert meta.map(lambda m: m["tag"]).value_counts().to_dict() == {
        "position": 100, "color_attr": 100, "two_object": 99, "colors": 94, "single_object": 80, "counting": 80}
    assert meta.map(lambda m: "exclude" in m).sum() == 80 and all("include" in m for m in meta)


def test_custom_prompt_file_and_cli_summary(tmp_path, capsys, cli_error):
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text('{"prompt": "a red cube", "style": "photo"}\n{"prompt": "a blue ball"}\n')
    frame = loaders.load_prompts("custom", source=prompts, height=256, width=256)
    assert list(frame["prompt"]) == ["a red cube", "a blue ball"]
    assert json.loads(frame["metadata"][0]) == {"style": "photo"}
    assert frame["height"].tolist() == [256, 256]
    with pytest.raises(loaders.UserDataError, match="needs --source"):
        loaders.load_prompts("custom")
    out = tmp_path / "prompts" / "color.parquet"
    cli(["--benchmark", "t2i_compbench", "--subset", "color", "--out", str(out), "--limit", "3"])
    line = capsys.readouterr().out.strip()
    assert line == f"t2i_compbench@1 color: 3 prompts × 10 → 30 samples (seeds per_image from 42) → {out}"
    written = pd.read_parquet(out)
    assert list(written.columns) == COLUMNS and written.attrs["protocol"]["subset"] == "color"
    assert "evals.benchmarks: error: " in (err := cli_error(cli, ["--benchmark", "geneval", "--source", prompts,
                                                                  "--out", out]))
    assert "uses its shipped file" in err


# ------------------------------------------------------------ COCO-30K


def _captions_json(tmp_path: Path, images: int = 60) -> Path:
    tmp_path.mkdir(exist_ok=True)
    data = {"images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in range(images)],
            "annotations": [{"id": 1000 * i + j, "image_id": i, "caption": f"image {i} caption {j} "}
                            for i in range(images) for j in range(5)]}
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(data))
    return path


def test_coco30k_builder_is_deterministic_with_one_caption_per_image(tmp_path):
    captions = _captions_json(tmp_path)
    first = loaders.build_coco30k(captions, seed=3, n=25)
    assert first == loaders.build_coco30k(captions, seed=3, n=25)
    assert first != loaders.build_coco30k(captions, seed=4, n=25)
    names = [r["file_name"] for r in first]
    assert len(set(names)) == 25 and names == sorted(names)
    assert all(r["text"].startswith(f"image {int(r['file_name'][13:25])} caption") for r in first)
    assert len({r["text"].split()[-1] for r in first}) > 1   # not always the first caption
    with pytest.raises(ValueError, match="only 60 captioned images"):
        loaders.build_coco30k(captions, seed=0, n=61)
    # the protocol's list: 30K distinct images; a shorter list or a repeated image is another protocol
    cli(["build-coco30k", "--captions", str(captions), "--seed", "3", "--n", "25", "--out", str(tmp_path / "short.csv")])
    with pytest.raises(DataIntegrityError, match="short.csv .*25 prompts, the subset has 30,000"):
        loaders.load_prompts("coco30k", "user_list", source=tmp_path / "short.csv")
    big = _captions_json(tmp_path / "big", images=30_000)
    cli(["build-coco30k", "--captions", str(big), "--seed", "3", "--out", str(tmp_path / "list.csv")])
    frame = loaders.load_prompts("coco30k", "user_list", source=tmp_path / "list.csv")
    assert list(frame["prompt"]) == [r["text"].strip() for r in loaders.build_coco30k(big, seed=3)]
    assert frame.attrs["protocol"]["sources"] == {"list.csv": sha256_file(tmp_path / "list.csv")}
    lines = (tmp_path / "list.csv").read_text().splitlines()
    (tmp_path / "twice.csv").write_text("\n".join(lines[:-1] + [lines[1]]) + "\n")
    with pytest.raises(DataIntegrityError, match="1 file_name values repeat"):
        loaders.load_prompts("coco30k", "user_list", source=tmp_path / "twice.csv")


def test_shipped_coco30k_list():
    frame = loaders.load_prompts("coco30k")
    names = frame["metadata"].map(lambda m: json.loads(m)["file_name"])
    assert len(frame) == 30_000 and names.nunique() == 30_000 and names.str.startswith("COCO_val2014_").all()
    assert frame["seed"].tolist() == list(range(30_000))


def test_coco_reference_folder_or_zip(tmp_path):
    with pytest.raises(loaders.UserDataError, match=r"images\.cocodataset\.org/zips/val2014\.zip"):
        loaders.coco_reference_images(tmp_path / "val2014")
    archive = tmp_path / "val2014.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"val2014/COCO_val2014_{i:012d}.jpg", f"jpeg {i}")
        zf.writestr("val2014/readme.txt", "not an image")
    wanted = ["COCO_val2014_000000000002.jpg", "COCO_val2014_000000000000.jpg"]
    images = loaders.coco_reference_images(archive, wanted)
    assert len(images) == 2 and dict(images.iter_bytes())["COCO_val2014_000000000002.jpg"] == b"jpeg 2"
    with pytest.raises(loaders.UserDataError, match="found 3 COCO_val2014_\\*.jpg images.*40,504"):
        loaders.coco_reference_images(archive)
    folder = tmp_path / "extracted"
    zipfile.ZipFile(archive).extractall(folder)
    with pytest.raises(loaders.UserDataError, match="1 of the 2 listed images are absent"):
        loaders.coco_reference_images(folder, wanted[:1] + ["COCO_val2014_000000000009.jpg"])
    assert [n for n, _ in loaders.coco_reference_images(folder, wanted).iter_bytes()] == sorted(wanted)


# ------------------------------------------------------------ WISE


def _wise_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    content = {
        "cultural_common_sense.json": [(2, "Cultural"), (1, "Cultural")],
        "spatio-temporal_reasoning.json": [(401, "Time"), (567, "Time"), (568, "Space")],
        "natural_science.json": [(701, "Biology"), (900, "Physics"), (1000, "Chemistry")],
    }
    paths = {}
    for name, entries in content.items():
        rows = [{"Prompt": f" prompt {i} ", "Explanation": f"why {i}", "Category": c, "Subcategory": "s",
                 "prompt_id": i} for i, c in entries]
        paths[name] = folder / name
        paths[name].write_text(json.dumps(rows))
    return paths


def _wise_protocol(tmp_path: Path, paths: dict[str, Path]) -> Path:
    def pin(spec):
        spec["sources"]["all"]["user_files"] = [{"name": n, "sha256": sha256_file(p)} for n, p in paths.items()]
    return _protocol_copy(tmp_path, "wise", pin)


def test_wise_loader_reads_and_verifies_the_users_files(tmp_path):
    paths = _wise_files(tmp_path / "WISE" / "WISE_legacy" / "data")
    protocol = _wise_protocol(tmp_path, paths)
    frame = loaders.load_prompts(protocol, source=tmp_path / "WISE")   # a checkout root is found too
    meta = frame["metadata"].map(json.loads)
    assert [m["wise_id"] for m in meta] == [1, 2, 401, 567, 568, 701, 900, 1000]
    assert [m["category"] for m in meta] == ["cultural", "cultural", "time", "time", "space", "biology",
                                             "physics", "chemistry"]
    assert frame["prompt"][0] == "prompt 1" and meta[0]["Explanation"] == "why 1"
    assert frame["sample_id"][0] == "p000000_00" and len(frame) == 8

    paths["natural_science.json"].write_text(paths["natural_science.json"].read_text().replace("why", "how"))
    expected = yaml.safe_load(protocol.read_text())["sources"]["all"]["user_files"][2]["sha256"]
    with pytest.raises(DataIntegrityError, match=rf"natural_science\.json: sha256 .* expected {expected} "
                                                 r"\(WISE_legacy/data/natural_science\.json at PKU-YuanGroup/WISE@"):
        loaders.load_prompts(protocol, source=tmp_path / "WISE")


def test_wise_without_files_says_where_to_get_them(tmp_path):
    for source in (None, tmp_path):
        with pytest.raises(loaders.UserDataError) as err:
            loaders.load_prompts("wise", source=source)
        message = str(err.value)
        for part in ("PKU-YuanGroup/WISE", "eb51174483a5de2e34e8614cf9dfb3319ee7fcd0", "WISE_legacy/data",
                     "cultural_common_sense.json", "spatio-temporal_reasoning.json", "natural_science.json"):
            assert part in message
    spec = yaml.safe_load((BENCH / "wise.yaml").read_text())
    assert spec["sources"]["all"]["user_files"][0]["sha256"] == \
        "7a59216c768698280cea37caa574b52f3faf054d73b398b9bb6b3161baf8e3aa"


# ------------------------------------------------------------ SAM


def _sa1b_folder(tmp_path: Path, count: int = 12) -> Path:
    folder = tmp_path / "sa1b"
    folder.mkdir()
    for i in range(count):
        (folder / f"sa_{i}.jpg").write_bytes(f"jpeg {i}".encode())
        (folder / f"sa_{i}.txt").write_text(f"a photo number {i}\n")
    (folder / "sa_uncaptioned.jpg").write_bytes(b"jpeg")
    return folder


def test_sam_subset_freeze_and_verify(tmp_path):
    folder = _sa1b_folder(tmp_path)
    sha = loaders.freeze_sam_subset(folder, 5, seed=0, out=tmp_path / "a.csv")
    assert sha == loaders.freeze_sam_subset(folder, 5, seed=0, out=tmp_path / "b.csv")
    assert sha != loaders.freeze_sam_subset(folder, 5, seed=1, out=tmp_path / "c.csv")
    rows = loaders.load_sam_subset(tmp_path / "a.csv", folder, n=5)
    assert len({r["file_name"] for r in rows}) == 5 and "sa_uncaptioned.jpg" not in {r["file_name"] for r in rows}
    assert all(r["caption"] == f"a photo number {r['file_name'][3:-4]}" for r in rows)
    with pytest.raises(DataIntegrityError, match="5 images, the subset needs 2000"):
        loaders.load_prompts("sam", "fid2k", source=tmp_path / "a.csv")
    with pytest.raises(loaders.UserDataError, match="13 needed"):
        loaders.freeze_sam_subset(folder, 13, seed=0, out=tmp_path / "d.csv")

    first = folder / rows[0]["file_name"]
    first.with_suffix(".txt").write_text("another caption")
    with pytest.raises(DataIntegrityError, match="caption differs"):
        loaders.sam_reference_images(tmp_path / "a.csv", folder)
    first.write_bytes(b"changed")
    with pytest.raises(DataIntegrityError, match=rf"{first.name}: sha256 differs"):
        loaders.load_sam_subset(tmp_path / "a.csv", folder)


def test_sam_prompt_set_from_a_frozen_list(tmp_path):
    folder = _sa1b_folder(tmp_path)
    protocol = _protocol_copy(tmp_path, "sam", lambda s: s["sources"]["fid2k"].update(n=4))
    cli(["freeze-sam", "--images", str(folder), "--n", "4", "--seed", "0", "--out", str(tmp_path / "list.csv")])
    frame = loaders.load_prompts(protocol, "fid2k", source=tmp_path / "list.csv", images=folder)
    assert len(frame) == 4 and frame["prompt"].str.startswith("a photo number").all()
    assert json.loads(frame["metadata"][0])["file_name"].startswith("sa_")


def test_fid_reference_must_be_the_protocols_set(monkeypatch):
    """COCO-30K: all 40,504 val2014 images and nothing else; SAM: exactly the listed images; others: unchecked."""
    val2014 = [f"val2014/COCO_val2014_{i:012d}.jpg" for i in range(40_504)]
    loaders.check_reference_names("coco30k@1", "coco", val2014, [])
    with pytest.raises(loaders.UserDataError, match="40,503 distinct COCO_val2014_.*incomplete download"):
        loaders.check_reference_names("coco30k@1", "coco", val2014[1:], [])
    with pytest.raises(loaders.UserDataError, match=r"1 other images \(first: \['COCO_train2014_1.jpg'\]\)"):
        loaders.check_reference_names("coco30k@1", "coco", val2014 + ["COCO_train2014_1.jpg"], [])
    listed = ["sa_1.jpg", "sa_2.jpg"]
    loaders.check_reference_names("sam@1/fid2k", "ref", ["sa_2.jpg", "sa_1.jpg"], listed)
    with pytest.raises(loaders.UserDataError, match=r"1 listed images are absent .*1 images are not in the list "
                                                    r".*Fix: copy"):
        loaders.check_reference_names("sam@1/fid2k", "ref", ["sa_1.jpg", "sa_9.jpg"], listed)
    loaders.check_reference_names("shapes@1/fid", "ref", ["anything.png"], [])


def test_a_prompt_limit_below_one_is_refused(tmp_path, capsys):
    """limit -1 kept all prompts but the last ([:-1]) and was recorded as the run's limit; 0 crashed later."""
    import jsonschema

    from pixart.prompts import main as prompts_cli

    with pytest.raises(ValueError, match="limit -1: give the number of prompts to keep"):
        loaders.load_prompts("t2i_compbench", "spatial", limit=-1)
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    for run in (lambda: cli(["--benchmark", "t2i_compbench", "--subset", "spatial", "--limit", "-1",
                             "--out", str(tmp_path / "x.parquet")]),
                lambda: prompts_cli(["--source", str(tmp_path / "p.txt"), "--limit", "0", "--out", str(tmp_path / "y.parquet")])):
        with pytest.raises(SystemExit):
            run()
        assert "is not a positive whole number" in capsys.readouterr().err
    schema = yaml.safe_load((Path(__file__).parent.parent / "workflows/schemas/config.schema.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError, match="less than the minimum of 1"):
        jsonschema.validate({"benchmarks": {"b": {"prompts": "p.txt", "limit": 0}}}, schema)
