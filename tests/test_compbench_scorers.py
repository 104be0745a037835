"""T2I-CompBench per-image scorer kinds (evals.metrics.compbench_scorers) end to end on synthetic cells:
(a) exact scores with deterministic fake backends injected through settings (worked examples of
reference/benchmarks.md §1.3 reproduced through the kinds), failures named and counted, unknown prompts
refused; (b) tiny random-config BLIP / OWLv2 / DPT / CLIP built from weight folders through the real adapters."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evals.metrics import compbench as cb
from evals.metrics import compbench_scorers as cs

RED, GREEN, BLUE, WHITE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (128, 128, 128)


def write_cell(root: Path, rows, size=(64, 64), metadata=None) -> pd.DataFrame:
    """rows: (prompt, colour | 'corrupt'); one prompt_id per distinct prompt, image_index counting within it."""
    root.mkdir(parents=True, exist_ok=True)
    ids, records = {}, []
    for n, (prompt, colour) in enumerate(rows):
        pid = ids.setdefault(prompt, f"p{len(ids):06d}")
        k = sum(r["prompt"] == prompt for r in records)
        name = f"{pid}_{k:02d}.png"
        if colour == "corrupt":
            (root / name).write_bytes(b"\x89PNG truncated")
        else:
            Image.new("RGB", size, colour).save(root / name)
        record = {"sample_id": name[:-4], "prompt_id": pid, "image_index": k, "prompt": prompt, "file": name}
        if metadata is not None:
            record["metadata"] = metadata[n]
        records.append(record)
    manifest = pd.DataFrame(records)
    manifest.to_parquet(root / "manifest.parquet")
    return pd.read_parquet(root / "manifest.parquet")


def colour_of(image):
    return image.convert("RGB").getpixel((0, 0))


def det(label, score, box):
    return cb.Detection(label, score, tuple(float(v) for v in box))


class FakeBlip:
    """P(yes) by question text and image colour; records every batched call."""

    name = "fake_blip"
    fingerprint = "fakeblip0000"

    def __init__(self, probs):
        self.probs, self.calls = probs, []

    def question_probabilities(self, images, questions, np_num=8):
        self.calls.append(len(images))
        return [[self.probs[(colour_of(im), q)] for q in qs[:np_num]] for im, qs in zip(images, questions)]


class FakeDetector:
    """Detections by image colour (boxes in the detector frame); records the queried labels."""

    name = "fake_detector"
    fingerprint = "fakedet00000"

    def __init__(self, table):
        self.table, self.queries, self.sizes = table, [], []

    def detect(self, image, labels):
        self.queries.append(list(labels))
        self.sizes.append(image.size)
        return list(self.table.get(colour_of(image), []))


class FakeDepth:
    """Inverse depth 0.9 on rows 0..99 of the detector frame, 0 elsewhere."""

    name = "fake_depth"
    fingerprint = "fakedepth000"

    def depth_in_detector_frame(self, image):
        w, h = cb.detector_frame_size(*image.size)
        depth = np.zeros((h, w), dtype=np.float32)
        depth[0:100, :] = 0.9
        return depth


class FakeClip:
    name = "fake_clip"
    fingerprint = "fakeclip0000"
    n_truncated = 0

    def __init__(self, values):
        self.values, self.captions = values, []

    def score(self, images, captions, batch_size=32):
        self.captions.extend(captions)
        return np.array([self.values[c] for c in captions])


# ------------------------------------------------------------------ BLIP-VQA kind (fake backend)

BENCH, BOWL = "a green bench and a blue bowl", "a triangular slice of cheese and a rectangular cheese board"


def test_blip_kind_product_and_np_num(tmp_path):
    manifest = write_cell(tmp_path, [(BENCH, RED), (BENCH, GREEN), (BOWL, RED), (BENCH, "corrupt")])
    q_bowl = ["a triangular slice?", "cheese?", "a rectangular cheese board?"]
    probs = {(RED, "a green bench?"): 0.90, (RED, "a blue bowl?"): 0.80,
             (GREEN, "a green bench?"): 0.5, (GREEN, "a blue bowl?"): 0.5,
             **{(RED, q): p for q, p in zip(q_bowl, (0.9, 0.8, 0.5))}}
    blip = FakeBlip(probs)
    scores, errors, meta = cs.compbench_blip_vqa_kind({"_blip": blip}, manifest, tmp_path)
    assert scores[0] == pytest.approx(0.72)  # the §1.3 test vector, through the kind
    assert scores[1] == pytest.approx(0.25)
    assert scores[2] == pytest.approx(0.36)  # all three questions (np_num 8)
    assert np.isnan(scores[3]) and errors[3].startswith("p000000_02.png") and errors[:3] == [None] * 3
    assert meta["scorer"] == "compbench_blipvqa_np8" and meta["np_num"] == 8 and meta["higher_is_better"] is True
    assert meta["weights_fingerprint"] == "fakeblip0000" and meta["n_unreadable"] == 1
    assert blip.calls == [3]  # one batched call for the chunk's readable images

    legacy, _, meta2 = cs.compbench_blip_vqa_kind({"_blip": FakeBlip(probs), "np_num": 2}, manifest, tmp_path)
    assert legacy[0] == pytest.approx(0.72) and legacy[2] == pytest.approx(0.72)  # third question ignored
    assert meta2["scorer"] == "compbench_blipvqa_np2"


def test_blip_kind_chunks_and_question_filter(tmp_path):
    left = "a sheep on the left of a lamp"  # noun chunks: a sheep / the left / a lamp
    manifest = write_cell(tmp_path, [(left, RED)] * 5)
    probs = {(RED, "a sheep?"): 0.9, (RED, "a lamp?"): 0.8, (RED, "the left?"): 0.5}
    blip = FakeBlip(probs)
    scores, _, _ = cs.compbench_blip_vqa_kind({"_blip": blip, "val_file": "spatial_val.txt", "chunk_size": 2},
                                              manifest, tmp_path)
    assert blip.calls == [2, 2, 1] and np.allclose(scores, 0.72)  # "the left" dropped as upstream
    unfiltered, _, meta = cs.compbench_blip_vqa_kind(
        {"_blip": FakeBlip(probs), "val_file": "spatial_val.txt", "question_filter": False}, manifest, tmp_path)
    assert np.allclose(unfiltered, 0.36) and meta["question_filter"] is False


def test_unknown_prompt_is_refused_with_prompt_and_parse_file(tmp_path):
    manifest = write_cell(tmp_path, [(BENCH, RED), ("a prompt nobody froze", RED)])
    with pytest.raises(cs.MissingParseError, match=r"'a prompt nobody froze'.*") as info:
        cs.compbench_blip_vqa_kind({"_blip": FakeBlip({})}, manifest, tmp_path)
    assert "color_val.v1.jsonl" in str(info.value) and "freeze_compbench_parse" in str(info.value)
    with pytest.raises(cs.MissingParseError, match="spatial_val.v1.jsonl"):
        cs.compbench_spatial_2d_kind({"_detector": FakeDetector({})}, manifest, tmp_path)


def test_a_backend_failing_on_one_image_fails_only_that_image(tmp_path):
    manifest = write_cell(tmp_path, [(BENCH, RED), (BENCH, BLUE), (BENCH, RED)])
    probs = {(RED, "a green bench?"): 0.9, (RED, "a blue bowl?"): 0.8}  # BLUE is unknown -> KeyError
    scores, errors, _ = cs.compbench_blip_vqa_kind({"_blip": FakeBlip(probs)}, manifest, tmp_path)
    assert np.allclose(scores[[0, 2]], 0.72) and np.isnan(scores[1])
    assert errors[1].startswith("p000000_01.png: scoring failed: KeyError")
    with pytest.raises(cs.ScoringError, match="all 3 readable images failed"):
        cs.compbench_blip_vqa_kind({"_blip": FakeBlip({})}, manifest, tmp_path)


# ------------------------------------------------------------------ 2D spatial kind (fake detector)

SHEEP = "a sheep on the left of a lamp"
CHICKEN = "a chicken on the left of a girl"


def test_spatial_2d_kind_worked_examples(tmp_path):
    manifest = write_cell(tmp_path, [(SHEEP, RED), (SHEEP, BLUE), (SHEEP, GREEN), (SHEEP, WHITE), (SHEEP, GREY),
                                     (CHICKEN, RED), (SHEEP, "corrupt")])
    detector = FakeDetector({
        RED: [det("sheep", 0.9, (0, 0, 100, 100)), det("lamp", 0.8, (200, 0, 300, 100)),
              det("chicken", 0.9, (0, 0, 100, 100)), det("person", 0.8, (200, 0, 300, 100))],
        BLUE: [det("sheep", 0.9, (200, 0, 300, 100)), det("lamp", 0.8, (0, 0, 100, 100))],  # swapped: 0.425 -> 0
        GREEN: [det("sheep", 0.9, (0, 0, 200, 100)), det("lamp", 0.8, (100, 0, 300, 100))],  # IoU 1/3
        WHITE: [det("sheep", 0.99, (0, 0, 100, 100))],  # one object: 0.2475 -> 0
    })
    scores, errors, meta = cs.compbench_spatial_2d_kind({"_detector": detector}, manifest, tmp_path)
    assert scores[:6] == pytest.approx([0.925, 0.0, 0.575, 0.0, 0.0, 0.925])
    assert np.isnan(scores[6]) and "p000000_05.png" in errors[6] and errors[:6] == [None] * 6
    assert detector.queries[0] == ["sheep", "lamp"] and detector.queries[5] == ["chicken", "person"]  # alias
    assert set(detector.sizes) == {(479, 479)}  # detector frame of a 64 x 64 image
    assert meta["scorer"] == "compbench_spatial2d_fake_detector" and meta["weights_fingerprint"] == "fakedet00000"
    assert (meta["n_no_object_detected"], meta["n_one_object_detected"], meta["n_both_objects_detected"]) == (1, 1, 4)
    assert meta["n_unreadable"] == 1 and meta["higher_is_better"] is True


# ------------------------------------------------------------------ 3D spatial kind (fake detector + depth)


def test_spatial_3d_kind(tmp_path):
    front, behind = "a dog in front of a desk", "a cat behind a boy"
    manifest = write_cell(tmp_path, [(front, RED), (front, BLUE), (behind, GREEN), (front, WHITE)])
    a, b = (0, 0, 100, 100), (50, 0, 150, 100)  # IoU 1/3; box A's transposed crop lies on the close rows
    detector = FakeDetector({
        RED: [det("dog", 0.8, a), det("desk", 0.6, b)],
        BLUE: [det("dog", 0.8, b), det("desk", 0.6, a)],  # dog farther -> pos 0, no 0.5 cut-off
        GREEN: [det("person", 0.8, b), det("cat", 0.6, a)],  # cat closer than the boy -> "behind" fails
        WHITE: [det("hot dog", 0.8, a)],  # substring match, one object
    })
    scores, errors, meta = cs.compbench_spatial_3d_kind({"_detector": detector, "_depth": FakeDepth()},
                                                        manifest, tmp_path)
    assert scores == pytest.approx([0.2 + 0.15 + (2 / 3) / 2, 0.35, 0.35, 0.2]) and errors == [None] * 4
    assert detector.queries[2] == ["cat", "person"]
    assert meta["scorer"] == "compbench_spatial3d_fake_detector_fake_depth"
    assert meta["fingerprints"] == {"detector": "fakedet00000", "depth": "fakedepth000"}
    assert len(meta["weights_fingerprint"]) == 16 and meta["n_both_objects_detected"] == 3

    class WrongShapeDepth(FakeDepth):
        def depth_in_detector_frame(self, image):
            return np.zeros((10, 10), dtype=np.float32)

    mixed = write_cell(tmp_path / "mixed", [(front, RED)])
    with pytest.raises(cs.ScoringError, match="detector frame"):
        cs.compbench_spatial_3d_kind({"_detector": detector, "_depth": WrongShapeDepth()}, mixed, tmp_path / "mixed")


# ------------------------------------------------------------------ numeracy kind (fake detector)


def test_numeracy_kind(tmp_path):
    boys, pear = "two boys", "one pear and three knives"
    box = lambda x: (x, 0, x + 50, 50)  # noqa: E731
    manifest = write_cell(tmp_path, [(boys, RED), (boys, BLUE), (boys, WHITE), (pear, GREEN), (pear, RED)])
    detector = FakeDetector({
        RED: [det("person", 0.9, box(0)), det("person", 0.8, (2, 2, 48, 48)), det("person", 0.9, box(100))],
        BLUE: [det("person", 0.9, box(0))],
        GREEN: [det("pear", 0.9, box(0)), *[det("knife", 0.9, box(100 * k)) for k in (1, 2, 3)]],
    })
    scores, errors, meta = cs.compbench_numeracy_kind({"_detector": detector}, manifest, tmp_path)
    # duplicate merged -> 2 persons = 1.0; one person 0.5; nothing 0; all counts right 1.0; nothing found 0
    assert scores == pytest.approx([1.0, 0.5, 0.0, 1.0, 0.0]) and errors == [None] * 5
    assert detector.queries[0] == ["person"] and detector.queries[3] == ["pear", "knife"]
    assert meta["scorer"] == "compbench_numeracy_fake_detector"
    assert (meta["n_no_object_detected"], meta["n_all_counts_correct"]) == (2, 2)
    assert meta["new_objects_sha256"] == cs.path_fingerprint(cs.NEW_OBJECTS)


def test_numeracy_table_must_agree_with_the_frozen_parse(tmp_path):
    manifest = write_cell(tmp_path, [("two boys", RED)])
    table = tmp_path / "objects.txt"
    table.write_text("girl - girls\n")  # "boys" unknown -> no target, unlike the frozen parse
    with pytest.raises(ValueError, match="differ from the frozen parse"):
        cs.compbench_numeracy_kind({"_detector": FakeDetector({}), "new_objects": str(table)}, manifest, tmp_path)


# ------------------------------------------------------------------ complex (3-in-1) kind (fakes)

CAT = "The fluffy cat is on the left of the soft pillow."  # spatial
PHONE = "The black phone was resting on the brown charger."  # action
RIVER = "The smooth black river flowed next to the tall green trees."  # spatialaction
HAT = "The red hat was on top of the brown coat rack."  # spatial, "on top of" quirk -> S = 0


@pytest.mark.parametrize("with_metadata", [True, False])
def test_complex_kind_three_in_one(tmp_path, with_metadata):
    rows = [(CAT, RED), (PHONE, RED), (RIVER, RED), (HAT, RED), (CAT, "corrupt")]
    groups = ["spatial", "action", "spatialaction", "spatial", "spatial"]
    metadata = [json.dumps({"category": "complex", "complex_group": g}) for g in groups] if with_metadata else None
    manifest = write_cell(tmp_path, rows, metadata=metadata)
    assert cs.complex_groups(manifest) == groups
    probs = {(RED, "The fluffy cat?"): 0.9, (RED, "the soft pillow?"): 0.8,
             (RED, "The black phone?"): 0.5, (RED, "the brown charger?"): 0.6,
             (RED, "The smooth black river?"): 0.7, (RED, "the tall green trees?"): 1.0,
             (RED, "The red hat?"): 0.4, (RED, "the brown coat rack?"): 0.5}
    detector = FakeDetector({RED: [det("cat", 0.9, (0, 0, 100, 100)), det("pillow", 0.8, (200, 0, 300, 100)),
                                   det("river", 0.6, (0, 0, 100, 100)), det("trees", 0.6, (0, 300, 100, 400)),
                                   det("hat", 0.9, (0, 0, 50, 50)), det("coat", 0.9, (0, 300, 50, 350))]})
    clip = FakeClip({"The phone was resting on the charger .": 0.31, "The river flowed next to the trees .": 0.28})
    settings = {"_blip": FakeBlip(probs), "_detector": detector, "_clip": clip}
    scores, errors, meta = cs.compbench_complex_kind(settings, manifest, tmp_path)
    spatial_river = 0.25 * 0.6 + 0.25 * 0.6 + 0.5  # next to: |dx| = 0 < 150
    expected = [cb.three_in_one("spatial", 0.72, 0.925, np.nan), cb.three_in_one("action", 0.3, np.nan, 0.31),
                cb.three_in_one("spatialaction", 0.7, spatial_river, 0.28),
                cb.three_in_one("spatial", 0.2, 0.0, np.nan)]
    assert scores[:4] == pytest.approx(expected)
    assert scores[:4] == pytest.approx([0.8225, 0.305, (0.7 + 0.8 + 0.28) / 3, 0.1])
    assert np.isnan(scores[4]) and errors[4].startswith("p000000_01.png") and errors[:4] == [None] * 4
    assert clip.captions == ["The phone was resting on the charger .", "The river flowed next to the trees ."]
    assert detector.queries == [["cat", "pillow"], ["river", "trees"], ["hat", "coat"]]  # S only where used
    assert meta["n_by_group"] == {"spatial": 3, "action": 1, "spatialaction": 1}
    assert meta["fingerprints"] == {"blip": "fakeblip0000", "detector": "fakedet00000", "clip": "fakeclip0000"}
    assert meta["scorer"] == "compbench_3in1_np8_fake_detector" and meta["higher_is_better"] is True
    assert meta["mean_attribute"] == pytest.approx(np.mean([0.72, 0.3, 0.7, 0.2]))


def test_complex_kind_legacy_modes(tmp_path):
    manifest = write_cell(tmp_path, [(RIVER, RED)])
    probs = {(RED, "The smooth black river?"): 0.7, (RED, "the tall green trees?"): 1.0}
    detector = FakeDetector({RED: [det("trees", 0.6, (0, 0, 100, 100))]})
    clip = FakeClip({RIVER: 0.25})
    settings = {"_blip": FakeBlip(probs), "_detector": detector, "_clip": clip, "clip_text": "prompt",
                "spatial_objects": "first_last"}
    scores, _, meta = cs.compbench_complex_kind(settings, manifest, tmp_path)
    # first/last NOUN = trees/trees: both "found" on one box -> 0.3 + 0.5 * pos(1.0) = 0.8
    assert scores[0] == pytest.approx((0.7 + 0.8 + 0.25) / 3)
    assert detector.queries == [["trees"]] and clip.captions == [RIVER] and meta["clip_text"] == "prompt"


# ------------------------------------------------------------------ tiny random models through the real adapters


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from evals.tiny import build_tiny_blip, build_tiny_clip, build_tiny_dpt, build_tiny_owlv2

    root = tmp_path_factory.mktemp("tiny_compbench")
    return {"blip": build_tiny_blip(root / "blip"), "owlv2": build_tiny_owlv2(root / "owlv2"),
            "dpt": build_tiny_dpt(root / "dpt"), "clip": build_tiny_clip(root / "clip", seed=0)}


def noise_images(n, seed=0, size=(80, 60)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def write_noise_cell(root: Path, prompts) -> pd.DataFrame:
    manifest = write_cell(root, [(p, WHITE) for p in prompts])
    for name, image in zip(manifest["file"], noise_images(len(prompts))):
        image.save(root / name)
    return manifest


def _check(scores, errors, meta, n, low=0.0, high=1.0):
    assert scores.shape == (n,) and np.isfinite(scores).all() and errors == [None] * n
    assert ((low <= scores) & (scores <= high)).all()
    assert meta["higher_is_better"] is True and len(meta["weights_fingerprint"]) == 16


def test_tiny_blip_from_weights_folder(tiny, tmp_path):
    manifest = write_noise_cell(tmp_path, [BENCH, BENCH, BOWL])
    settings = {"weights": tiny["blip"], "device": "cpu", "blip_batch_size": 2}
    scores, errors, meta = cs.compbench_blip_vqa_kind(settings, manifest, tmp_path)
    _check(scores, errors, meta, 3)
    assert meta["weights_fingerprint"] == cs.path_fingerprint(tiny["blip"])
    assert meta["backend"] == "blip_vqa_capfilt_large"
    # the kind equals the adapter's own per-image score, and np_num 1 is the first question's p alone
    from evals.metrics.blip_vqa import BlipVqa

    blip = BlipVqa.from_pretrained(tiny["blip"], batch_size=2)  # same batches as the kind
    images = [Image.open(tmp_path / f).convert("RGB") for f in manifest["file"]]
    questions = [list(cb.load_prompt_parses("legacy_7710d05/color_val.txt")[BENCH].blip_questions)] * 2 + \
                [list(cb.load_prompt_parses("shape_val.txt")[BOWL].blip_questions)]
    probs = blip.question_probabilities(images, questions)
    assert scores == pytest.approx([cb.blip_vqa_image_score(p) for p in probs], abs=3e-4)  # 4-decimal rounding
    injected, _, meta_injected = cs.compbench_blip_vqa_kind({"_blip": blip, "np_num": 1}, manifest, tmp_path)
    assert injected == pytest.approx([cb.format4(p[0]) for p in probs], abs=3e-4)
    assert meta_injected["weights_fingerprint"] == cs.module_fingerprint(blip.model)


def test_tiny_owlv2_spatial_2d_and_numeracy(tiny, tmp_path):
    settings = {"weights": tiny["owlv2"], "device": "cpu", "detector_threshold": 0.0}
    manifest = write_noise_cell(tmp_path / "s", [SHEEP, SHEEP, CHICKEN])
    scores, errors, meta = cs.compbench_spatial_2d_kind(settings, manifest, tmp_path / "s")
    _check(scores, errors, meta, 3)
    assert meta["scorer"] == "compbench_spatial2d_owlv2" and meta["n_no_object_detected"] == 0  # threshold 0
    assert all(s == 0 or s >= 0.5 for s in scores)
    manifest = write_noise_cell(tmp_path / "n", ["two boys", "one pear and three knives"])
    scores, errors, meta = cs.compbench_numeracy_kind(settings, manifest, tmp_path / "n")
    _check(scores, errors, meta, 2)
    assert meta["scorer"] == "compbench_numeracy_owlv2"
    assert meta["weights_fingerprint"] == cs.path_fingerprint(tiny["owlv2"])


def test_tiny_owlv2_dpt_spatial_3d(tiny, tmp_path):
    settings = {"weights": tiny["owlv2"], "depth_weights": tiny["dpt"], "device": "cpu", "detector_threshold": 0.0}
    manifest = write_noise_cell(tmp_path, ["a dog in front of a desk", "a cat behind a boy"])
    scores, errors, meta = cs.compbench_spatial_3d_kind(settings, manifest, tmp_path)
    _check(scores, errors, meta, 2)
    assert meta["scorer"] == "compbench_spatial3d_owlv2_dpt"
    assert meta["fingerprints"]["depth"] == cs.path_fingerprint(tiny["dpt"])


def test_tiny_complex_all_backends(tiny, tmp_path):
    manifest = write_noise_cell(tmp_path, [CAT, PHONE, RIVER, HAT])
    settings = {"blip_weights": tiny["blip"], "detector_weights": tiny["owlv2"], "detector_threshold": 0.0,
                "clip_weights": tiny["clip"]["weights"], "clip_model_name": tiny["clip"]["model_name"],
                "clip_config_dir": tiny["clip"]["config_dir"], "device": "cpu"}
    scores, errors, meta = cs.compbench_complex_kind(settings, manifest, tmp_path)
    _check(scores, errors, meta, 4, low=-1.0)  # a random CLIP's cosine may be negative
    assert 0 <= meta["mean_attribute"] <= 1 and 0 <= meta["mean_spatial"] <= 1 and -1 <= meta["mean_action"] <= 1
    assert meta["fingerprints"]["clip"] == cs.path_fingerprint(tiny["clip"]["weights"])
    assert meta["scorer"] == "compbench_3in1_np8_owlv2"


def test_kind_through_the_scoring_cli(tiny, tmp_path, monkeypatch):
    """Registered in evals.score.KINDS, a kind runs from a JSON settings file; its meta lands in the aggregate."""
    from evals import score

    monkeypatch.setitem(score.KINDS, "compbench_spatial_2d", cs.compbench_spatial_2d_kind)
    cell = tmp_path / "cell"
    manifest = write_noise_cell(cell, [SHEEP, SHEEP, CHICKEN, CHICKEN])  # same image count for every prompt
    (cell / manifest["file"].iloc[1]).write_bytes(b"not a png")
    settings = tmp_path / "spatial.json"
    settings.write_text(json.dumps({"kind": "compbench_spatial_2d", "weights": tiny["owlv2"], "device": "cpu",
                                    "detector_threshold": 0.0}))
    result = score.run(score.parser().parse_args([
        "--scorer", "spatial_owlv2", "--settings", str(settings), "--cell", str(cell),
        "--protocol", "t2i_compbench@1", "--scores-out", str(tmp_path / "s.parquet"),
        "--metric-out", str(tmp_path / "m.json")]))
    assert result["n"] == 3 and result["n_failed"] == 1 and "p000000_01.png" in result["failed_examples"][0]
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["scorer"] == "compbench_spatial2d_owlv2"
    assert saved["weights_fingerprint"] == cs.path_fingerprint(tiny["owlv2"])
    assert pd.read_parquet(tmp_path / "s.parquet")["score"].isna().sum() == 1


def test_an_unknown_vqa_backend_is_refused_not_taken_for_blip():
    with pytest.raises(cs.ScoringError, match="vqa 'shape_oracle' is not a VQA backend; use blip or shapes_oracle"):
        cs.build_blip({"vqa": "shape_oracle"}, "weights")
    oracle, _ = cs.build_blip({"vqa": "shapes_oracle"}, "weights")
    assert type(oracle).__name__ == "ShapesOracle"
