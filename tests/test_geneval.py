"""GenEval scoring: the rules of djghosh13/geneval evaluate_images.py / summary_scores.py on hand-made
detections (every tag, threshold edges), the shipped prompt metadata, and the Mask2Former / CLIP backends and
the `geneval_kind` scorer glue end to end on tiny random models."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evals.metrics import geneval as ge
from evals.metrics import geneval_backends as gb
from evals.metrics.compbench import MissingWeightsError
from evals.metrics.compbench_scorers import ScoringError

BENCH = "a photo of a bench"
TWO = {"tag": "two_object", "include": [{"class": "bench", "count": 1}, {"class": "sports ball", "count": 1}]}
SINGLE = {"tag": "single_object", "include": [{"class": "bench", "count": 1}]}
COUNT2 = {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]}
COLOR = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "pink"}]}
RIGHT_OF = {"tag": "position",
            "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}
COLOR_ATTR = {"tag": "color_attr", "include": [{"class": "wine glass", "count": 1, "color": "purple"},
                                               {"class": "apple", "count": 1, "color": "black"}]}


def det(label, score, box=(0, 0, 10, 10), mask=None):
    return ge.MaskedDetection(label, float(score), tuple(float(v) for v in box), mask)


class FakeColors:
    """Colour 'classifier' reading the colour from a dict keyed by the box; records its calls."""

    name = "fake_colors"

    def __init__(self, colors: dict):
        self.colors, self.calls = colors, []

    def classify(self, image, objects, classname):
        self.calls.append((classname, len(objects)))
        return [self.colors[obj.box_xyxy] for obj in objects]


def correct(detections, meta, colors=None, **options):
    image = Image.new("RGB", (100, 100))
    return ge.evaluate_image(detections, meta, image, colors, ge.Options(**options)).correct


# ------------------------------------------------------------------ filtering


def test_threshold_is_strict_and_counting_uses_0_9():
    dets = [det("bench", 0.3), det("bench", 0.3000001), det("clock", 0.9), det("clock", 0.95)]
    kept = ge.filter_detections(dets, "single_object")
    assert [d.score for d in kept["bench"]] == [pytest.approx(0.3000001)]
    assert len(kept["clock"]) == 2
    kept = ge.filter_detections(dets, "counting")
    assert "bench" not in kept and [d.score for d in kept["clock"]] == [0.95]


def test_sorted_capped_at_16_and_no_nms_by_default():
    scores = np.linspace(0.31, 0.99, 20)
    rng = np.random.default_rng(0)
    dets = [det("cup", s) for s in rng.permutation(scores)]  # identical boxes: NMS would keep one
    kept = ge.filter_detections(dets, "two_object")["cup"]
    assert len(kept) == 16
    assert [d.score for d in kept] == sorted(scores, reverse=True)[:16]
    nms = ge.filter_detections(dets, "two_object", ge.Options(max_overlap=0.5))["cup"]
    assert [d.score for d in nms] == [pytest.approx(0.99)]


def test_equal_scores_reverse_input_order():
    a, b = det("cup", 0.5, (0, 0, 1, 1)), det("cup", 0.5, (5, 5, 6, 6))
    assert ge.filter_detections([a, b], "colors")["cup"] == [b, a]


def test_iou_plus1_convention():
    assert ge.box_iou_plus1((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert ge.box_iou_plus1((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert ge.box_iou_plus1((0, 0, -1, -1), (0, 0, -1, -1)) == 0


# ------------------------------------------------------------------ tags


def test_single_object():
    assert correct([det("bench", 0.31)], SINGLE)
    assert not correct([det("bench", 0.30)], SINGLE)  # exactly at the threshold
    assert not correct([det("chair", 0.99)], SINGLE)
    assert correct([det("bench", 0.5), det("bench", 0.6), det("cat", 0.9)], SINGLE)  # extras allowed


def test_two_object():
    assert correct([det("bench", 0.4), det("sports ball", 0.35)], TWO)
    assert not correct([det("bench", 0.99)], TWO)
    assert not correct([det("bench", 0.99), det("sports ball", 0.2)], TWO)


def test_counting_include_and_exclude():
    assert correct([det("clock", 0.95), det("clock", 0.91)], COUNT2)
    assert not correct([det("clock", 0.95), det("clock", 0.9)], COUNT2)  # 0.9 is not > 0.9
    assert not correct([det("clock", 0.95), det("clock", 0.93), det("clock", 0.92)], COUNT2)  # exclude hit
    assert correct([det("clock", 0.95), det("clock", 0.93), det("clock", 0.89)], COUNT2)  # third filtered out
    assert not correct([det("clock", 0.99)], COUNT2)
    result = ge.evaluate_image([det("clock", 0.99)] * 3, COUNT2)
    assert not result.correct and "expected clock<3, found 3" in result.reason


def test_exclude_counts_only_kept_detections():
    meta = {"tag": "counting", "include": [{"class": "cup", "count": 1}], "exclude": [{"class": "cup", "count": 17}]}
    assert correct([det("cup", 0.95)] * 30, meta)  # capped at 16 per class: 17 can never be reached


def test_colors_checks_only_the_top_objects():
    pink, red = (0, 0, 10, 10), (20, 20, 30, 30)
    colors = FakeColors({pink: "pink", red: "red"})
    assert correct([det("car", 0.9, pink), det("car", 0.5, red)], COLOR, colors)
    assert not correct([det("car", 0.5, pink), det("car", 0.9, red)], COLOR, colors)  # top-1 is red
    assert colors.calls == [("car", 1), ("car", 1)]
    colors.calls.clear()
    assert not correct([det("car", 0.2, pink)], COLOR, colors)
    assert colors.calls == []  # not enough objects: no colour check
    meta = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "pink"}]}
    assert not correct([det("car", 0.9, pink), det("car", 0.8, red)], meta, colors)  # every one must match


def test_color_attr_both_clauses():
    a, b = (0, 0, 10, 10), (50, 50, 60, 60)
    meta = COLOR_ATTR
    dets = [det("wine glass", 0.8, a), det("apple", 0.7, b)]
    assert correct(dets, meta, FakeColors({a: "purple", b: "black"}))
    assert not correct(dets, meta, FakeColors({a: "purple", b: "red"}))
    assert not correct(dets, meta, FakeColors({a: "black", b: "purple"}))  # swapped attributes
    with pytest.raises(ValueError, match="colour classifier"):
        ge.evaluate_image(dets, meta)


def _pair(dx, dy=0.0, size=10.0):
    """Box B at the origin, box A with its centre offset by (dx, dy), both size x size."""
    b = (0.0, 0.0, size, size)
    a = (dx, dy, dx + size, dy + size)
    return a, b


def test_relative_position_thresholds():
    # offset d along x, sizes 10 + 10 -> revised (d - 2) / d; 0.5 exactly at d = 4
    assert ge.relative_position(*_pair(4.0)) == set()
    assert ge.relative_position(*_pair(4.5)) == {"right of"}
    assert ge.relative_position(*_pair(-4.5)) == {"left of"}
    assert ge.relative_position(*_pair(-4.0)) == set()
    assert ge.relative_position(*_pair(0, 4.5)) == {"below"}  # y grows downwards
    assert ge.relative_position(*_pair(0, -4.5)) == {"above"}
    assert ge.relative_position(*_pair(2.0005)) == set()  # revised offset below 1e-3: nothing
    assert ge.relative_position(*_pair(0, 0)) == set()
    assert ge.relative_position(*_pair(30, 30)) == {"right of", "below"}  # 28/42.4 = 0.66 each
    assert ge.relative_position(*_pair(30, 10)) == {"right of"}  # (28, 8) / 31.6
    # position_threshold option
    assert ge.relative_position(*_pair(4.5), position_threshold=0.0) == {"right of"}
    assert ge.relative_position(*_pair(50), position_threshold=1.0) == {"right of"}  # (50 - 20) / 50
    assert ge.relative_position(*_pair(40), position_threshold=1.0) == set()  # exactly 0.5


def test_position_clause():
    bear = (0, 0, 10, 10)
    dog_right, dog_edge, dog_left = (4.5, 0, 14.5, 10), (4, 0, 14, 10), (-20, 0, -10, 10)
    assert correct([det("teddy bear", 0.9, bear), det("dog", 0.9, dog_right)], RIGHT_OF)
    assert not correct([det("teddy bear", 0.9, bear), det("dog", 0.9, dog_edge)], RIGHT_OF)
    assert not correct([det("teddy bear", 0.9, bear), det("dog", 0.9, dog_left)], RIGHT_OF)
    result = ge.evaluate_image([det("dog", 0.9, dog_right)], RIGHT_OF)
    assert not result.correct and "no target for dog to be right of" in result.reason
    # only the most confident dog is compared; a lower-scored dog on the wrong side does not matter
    assert correct([det("teddy bear", 0.9, bear), det("dog", 0.9, dog_right), det("dog", 0.5, dog_left)], RIGHT_OF)
    assert not correct([det("teddy bear", 0.9, bear), det("dog", 0.5, dog_right), det("dog", 0.9, dog_left)], RIGHT_OF)


def test_position_all_pairs_and_colour_gate():
    meta = {"tag": "position", "include": [{"class": "cat", "count": 2},
                                           {"class": "dog", "count": 1, "position": ["above", 0]}]}
    cats_low = [det("cat", 0.9, (0, 50, 10, 60)), det("cat", 0.8, (40, 50, 50, 60))]
    assert correct(cats_low + [det("dog", 0.9, (20, 0, 30, 10))], meta)
    cats_mixed = [det("cat", 0.9, (0, 50, 10, 60)), det("cat", 0.8, (40, -60, 50, -50))]
    assert not correct(cats_mixed + [det("dog", 0.9, (20, 0, 30, 10))], meta)  # must be above every cat
    # a colour failure skips the position check (one reason only)
    meta = {"tag": "x", "include": [{"class": "cat", "count": 1},
                                    {"class": "dog", "count": 1, "color": "red", "position": ["above", 0]}]}
    dog = (20, 100, 30, 110)
    result = ge.evaluate_image([cats_low[0], det("dog", 0.9, dog)], meta, Image.new("RGB", (8, 8)),
                               FakeColors({dog: "blue"}))
    assert not result.correct and result.reason.count("\n") == 0 and "expected red dog>=1" in result.reason


# ------------------------------------------------------------------ aggregation and data


def test_task_scores_and_overall():
    tags = ["single_object"] * 4 + ["counting"] * 2 + ["position"] * 3
    results = [1, 1, 1, 0, 0, 1, 0, 0, float("nan")]
    scores = ge.task_scores(tags, results)
    assert list(scores) == ["single_object", "counting", "position"]
    assert scores == {"single_object": 0.75, "counting": 0.5, "position": 0.0}
    assert ge.overall_score(scores) == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert ge.overall_score({}) is None
    assert ge.task_scores(["colors"], [float("nan")]) == {}


def test_shipped_metadata_parses():
    table = gb.prompt_metadata()
    assert len(table) == 553
    tags = [ge.parse_metadata(m)["tag"] for m in table.values()]
    assert {t: tags.count(t) for t in ge.TAGS} == {"single_object": 80, "two_object": 99, "counting": 80,
                                                    "colors": 94, "position": 100, "color_attr": 100}
    names = set(ge.load_object_names())
    assert all(c["class"] in names for m in table.values() for c in m["include"] + m.get("exclude", []))
    assert table[BENCH] == SINGLE


def test_color_crop_greys_non_mask_pixels():
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:8] = True
    crop = ge.color_crop(image, (2, 1, 9, 6), mask)
    assert crop.size == (7, 5)
    arr = np.asarray(crop)
    assert tuple(arr[0, 0]) == (153, 153, 153) and tuple(arr[2, 2]) == (255, 0, 0)
    assert ge.color_crop(image, (2, 1, 9, 6), None).getpixel((0, 0)) == (255, 0, 0)
    assert ge.color_crop(image, (2.4, 1, 9.6, 6), mask).size == (8, 5)  # PIL rounds the box
    with pytest.raises(ValueError, match="mask shape"):
        ge.color_crop(image, (0, 0, 5, 5), mask.T)


def test_options_from_settings():
    opts = ge.Options.from_settings({"threshold": "0.5", "crop": "0", "max_objects": 3, "device": "cpu"})
    assert opts.threshold == 0.5 and opts.crop is False and opts.max_objects == 3 and opts.counting_threshold == 0.9


# ------------------------------------------------------------------ Mask2Former backend


def test_mmdet_rescale_and_postprocess():
    assert gb.mmdet_rescale_size(512, 512) == (800, 800)
    assert gb.mmdet_rescale_size(1024, 768) == (1067, 800)
    assert gb.mmdet_rescale_size(2000, 500) == (1333, 333)
    pixels, (h, w) = gb.mmdet_preprocess(Image.new("RGB", (1024, 768), (123, 116, 103)))
    assert (h, w) == (800, 1067) and pixels.shape == (1, 3, 800, 1088)
    assert pixels[0, :, :, 1067:].abs().max() == 0  # zero padding after normalisation
    # hand-made outputs: 2 queries, 3 classes + no-object
    class_logits = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0]])
    masks = torch.full((2, 6, 8), -5.0)
    masks[0, 1:3, 2:5] = 3.0
    masks[1, 4, 7] = 1.0
    scores, labels, boxes, binary = gb.instance_postprocess(class_logits, masks, max_per_image=2)
    order = torch.argsort(scores, descending=True)
    probs = torch.softmax(class_logits, -1)
    assert labels[order].tolist() == [0, 2]
    expected = [float(probs[0, 0] * torch.sigmoid(torch.tensor(3.0))),
                float(probs[1, 2] * torch.sigmoid(torch.tensor(1.0)))]
    assert scores[order].tolist() == pytest.approx(expected, rel=1e-5)
    assert boxes[order].tolist() == [[2, 1, 5, 3], [7, 4, 8, 5]]
    assert binary[order][0].sum() == 6
    empty = torch.zeros((2, 4, 5), dtype=torch.bool)
    empty[1, 3, 0] = True
    assert gb.masks_to_boxes_plus1(empty).tolist() == [[0, 0, 0, 0], [0, 3, 1, 4]]
    # resizing only the selected queries equals resizing all of them first (as mmdet does)
    small = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0))
    logits = torch.randn(5, 81, generator=torch.Generator().manual_seed(1))

    def up(m):
        return torch.nn.functional.interpolate(m[None], size=(12, 16), mode="bilinear", align_corners=False)[0]

    lazy = gb.instance_postprocess(logits, small, resize=up)
    eager = gb.instance_postprocess(logits, up(small))
    for a, b in zip(lazy, eager):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                               dim_feedforward=64, num_queries=12, num_labels=80)
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():  # make some queries confident so that detections pass the thresholds
        model.class_predictor.bias[:] = 0
        model.class_predictor.bias[74] = 12.0  # clock
        model.class_predictor.bias[13] = 9.0  # bench
    folder = tmp_path_factory.mktemp("m2f")
    model.save_pretrained(folder)
    return folder


TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A small open_clip config registered with add_model_config and random weights saved to a file, loaded
    back through the same local-file path as the real ViT-L/14 weights."""
    import open_clip

    out = tmp_path_factory.mktemp("clip")
    name = "geneval-tiny-clip"
    (out / f"{name}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(out))
    torch.manual_seed(3)
    torch.save(open_clip.create_model(name, pretrained=None).state_dict(), out / f"{name}.bin")
    return {"config_dir": str(out), "model_name": name, "weights": str(out / f"{name}.bin")}


def _image(seed, size=(64, 48)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_mask2former_detector_end_to_end(tiny_detector):
    detector = gb.Mask2FormerDetector.from_pretrained(str(tiny_detector))
    assert len(detector.fingerprint) == 16
    image = _image(0)
    dets = detector.detect(image)
    assert 0 < len(dets) <= gb.MMDET_MAX_PER_IMAGE
    names = set(ge.load_object_names())
    assert all(d.label in names for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    assert max(d.score for d in dets) > 0.3
    for d in dets[:10]:
        assert d.mask.shape == (48, 64) and d.mask.dtype == bool
        if d.mask.any():
            ys, xs = np.nonzero(d.mask)
            assert d.box_xyxy == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        else:
            assert d.box_xyxy == (0, 0, 0, 0)


def test_clip_color_classifier_matches_direct_computation(tiny_clip):
    import open_clip

    clf = gb.ClipColorClassifier.from_file(tiny_clip["weights"], tiny_clip["model_name"],
                                           config_dir=tiny_clip["config_dir"])
    assert len(clf.fingerprint) == 16 and not clf.amp
    image = _image(1)
    mask = np.zeros((48, 64), bool)
    mask[5:30, 10:40] = True
    objects = [det("car", 0.9, (8, 4, 42, 33), mask), det("car", 0.8, (0, 0, 64, 48), None)]
    colors = clf.classify(image, objects, "car")
    assert len(colors) == 2 and set(colors) <= set(ge.COLORS)
    # clip_benchmark's arithmetic, written out
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_clip["model_name"],
                                                                 pretrained=tiny_clip["weights"])
    tokenizer = open_clip.get_tokenizer(tiny_clip["model_name"])
    with torch.no_grad():
        columns = []
        for c in ge.COLORS:
            emb = model.encode_text(tokenizer([f"a photo of a {c} car", f"a photo of a {c}-colored car",
                                               f"a photo of a {c} object"]))
            emb = torch.nn.functional.normalize(emb, dim=-1).mean(0)
            columns.append(emb / emb.norm())
        weights = torch.stack(columns, dim=1)
        crops = [ge.color_crop(image, o.box_xyxy, o.mask) for o in objects]
        feats = torch.nn.functional.normalize(model.encode_image(torch.stack([preprocess(c) for c in crops])), dim=-1)
        direct = 100.0 * feats @ weights
    assert torch.allclose(clf.logits(image, objects, "car"), direct, atol=1e-4)
    assert colors == [ge.COLORS[i] for i in direct.argmax(1)]
    assert clf.classify(image, [], "car") == []


def test_missing_weights_name_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "open_clip_pytorch_model.bin"
    with pytest.raises(MissingWeightsError, match="open_clip_pytorch_model.bin") as err:
        gb.ClipColorClassifier.from_file(missing)
    assert str(missing) in str(err.value) and "ViT-L-14-quickgelu" in str(err.value)
    with pytest.raises(MissingWeightsError, match="clip_weights"):
        gb.ClipColorClassifier.from_file(None)
    with pytest.raises(MissingWeightsError, match="no-such-org/mask2former-absent"):
        gb.Mask2FormerDetector.from_pretrained("no-such-org/mask2former-absent")


# ------------------------------------------------------------------ scorer glue


def _cell(tmp_path, prompts, n_images=2):
    cell = tmp_path / "cell"
    cell.mkdir()
    rows = []
    for p, prompt in enumerate(prompts):
        for k in range(n_images):
            sample = f"p{p:06d}_{k:02d}"
            _image(10 * p + k).save(cell / f"{sample}.png")
            rows.append({"sample_id": sample, "prompt_id": f"p{p:06d}", "image_index": k, "prompt": prompt,
                         "file": f"{sample}.png"})
    manifest = pd.DataFrame(rows)
    manifest.to_parquet(cell / "manifest.parquet", index=False)
    return cell, manifest


PROMPTS = [BENCH, "a photo of a bench and a sports ball", "a photo of two clocks", "a photo of a green clock",
           "a photo of a dog right of a teddy bear", "a photo of a blue clock and a white cup"]


def test_geneval_kind_with_tiny_backends(tmp_path, tiny_detector, tiny_clip, monkeypatch):
    calls = []
    classify = gb.ClipColorClassifier.classify
    monkeypatch.setattr(gb.ClipColorClassifier, "classify",
                        lambda self, *a: calls.append(a[2]) or classify(self, *a))
    cell, manifest = _cell(tmp_path, PROMPTS, n_images=1)
    (cell / "broken.png").write_bytes(b"not a png")
    broken = manifest.iloc[[0]].assign(sample_id="p000000_01", image_index=1, file="broken.png")
    manifest = pd.concat([manifest, broken], ignore_index=True)
    settings = {"kind": "geneval", "detector_weights": str(tiny_detector), "clip_weights": tiny_clip["weights"],
                "clip_model": tiny_clip["model_name"], "clip_config_dir": tiny_clip["config_dir"], "device": "cpu"}
    scores, errors, meta = gb.geneval_kind(settings, manifest, cell)
    assert scores.shape == (7,) and math.isnan(scores[6]) and "broken.png" in errors[6]
    assert all(s in (0.0, 1.0) for s in scores[:6]) and errors[:6] == [None] * 6
    assert meta["scorer"] == gb.SCORER_NAME and meta["higher_is_better"] is True
    det_fp, clip_fp = meta["weights_fingerprint"].split("+")
    assert len(det_fp) == 16 and len(clip_fp) == 16
    assert list(meta["task_scores"]) == list(ge.TAGS)
    assert meta["task_scores"] == {tag: scores[i] for i, tag in enumerate(ge.TAGS)}
    assert meta["overall"] == pytest.approx(np.mean(scores[:6]))
    assert meta["task_counts"]["single_object"] == {"correct": int(scores[0]), "n": 1, "n_failed": 1}
    assert any("transformers" in d for d in meta["deviations"])
    assert calls == ["clock", "clock"]  # the tiny detector finds clocks: both colour prompts reach CLIP
    json.dumps(meta)  # the CLI writes it as JSON


class OracleDetector:
    """Returns, per image file size, a fixed detection list (the test's ground truth)."""

    name = "oracle"
    fingerprint = "oracle"

    def __init__(self, by_pixel):
        self.by_pixel = by_pixel

    def detect(self, image):
        return self.by_pixel[image.getpixel((0, 0))]


def test_geneval_kind_injected_backends(tmp_path):
    cell = tmp_path / "cell"
    cell.mkdir()
    plans = [  # prompt, detections, colours, expected
        (BENCH, [det("bench", 0.8)], {}, 1.0),
        (BENCH, [det("bench", 0.2)], {}, 0.0),
        ("a photo of two clocks", [det("clock", 0.95), det("clock", 0.92)], {}, 1.0),
        ("a photo of two clocks", [det("clock", 0.95), det("clock", 0.92), det("clock", 0.91)], {}, 0.0),
        ("a photo of a pink car", [det("car", 0.9, (1, 1, 5, 5))], {(1, 1, 5, 5): "pink"}, 1.0),
        ("a photo of a pink car", [det("car", 0.9, (1, 1, 6, 6))], {(1, 1, 6, 6): "red"}, 0.0),
        ("a photo of a pink car", [det("car", 0.9, (1, 1, 7, 7))], {(1, 1, 7, 7): "pink"}, 1.0),
    ]
    rows, by_pixel, colors = [], {}, {}
    for i, (prompt, dets, cols, _) in enumerate(plans):
        Image.new("RGB", (16, 16), (i, 0, 0)).save(cell / f"s{i}.png")
        by_pixel[(i, 0, 0)] = dets
        colors.update({tuple(float(v) for v in k): v for k, v in cols.items()})
        rows.append({"sample_id": f"s{i}", "prompt_id": f"p{i}", "image_index": 0, "prompt": prompt,
                     "file": f"s{i}.png"})
    rows.append({"sample_id": "x", "prompt_id": "px", "image_index": 0, "prompt": "not a geneval prompt",
                 "file": "s0.png"})
    manifest = pd.DataFrame(rows)
    scores, errors, meta = gb.geneval_kind({}, manifest, cell, detector=OracleDetector(by_pixel),
                                           color_classifier=FakeColors(colors))
    assert scores[:-1].tolist() == [p[3] for p in plans]
    assert math.isnan(scores[-1]) and "not a GenEval prompt" in errors[-1]
    assert meta["task_scores"] == {"single_object": 0.5, "counting": 0.5, "colors": pytest.approx(2 / 3)}
    assert meta["overall"] == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)
    assert meta["scorer"] == "geneval_oracle_fake_colors" and meta["weights_fingerprint"] == "oracle+none"
    assert meta["missing_tasks"] == ["two_object", "position", "color_attr"]
    assert meta["image_accuracy"] == pytest.approx(4 / 7)
    assert meta["prompt_accuracy"] == pytest.approx(4 / 7)  # every row has its own prompt_id here
    same_prompt = manifest.assign(prompt_id=["a", "a", "b", "b", "c", "c", "c", "x"])
    _, _, meta = gb.geneval_kind({}, same_prompt, cell, detector=OracleDetector(by_pixel),
                                 color_classifier=FakeColors(colors))
    assert meta["prompt_accuracy"] == 1.0


class FailingDetector:
    name = fingerprint = "failing"

    def __init__(self, error):
        self.error = error

    def detect(self, image):
        raise self.error


def test_a_backend_that_fails_on_every_image_fails_the_job(tmp_path):
    """A broken backend (or a CUDA error) made every image a NaN "failure" and the job succeeded, so Snakemake
    never retried it; out of memory is the job's resources, never an image's failure. Unreadable files alone
    stay counted failures, as in the T2I-CompBench scorers."""
    cell = tmp_path / "cell"
    cell.mkdir()
    Image.new("RGB", (16, 16)).save(cell / "s0.png")
    (cell / "s1.png").write_bytes(b"not a png")
    manifest = pd.DataFrame([{"sample_id": f"s{i}", "prompt_id": f"p{i}", "image_index": 0, "prompt": BENCH,
                              "file": f"s{i}.png"} for i in range(2)])
    with pytest.raises(ScoringError, match=r"all 1 readable images failed .*s0.png: RuntimeError: cuda error"):
        gb.geneval_kind({}, manifest, cell, detector=FailingDetector(RuntimeError("cuda error")),
                        color_classifier=FakeColors({}))
    with pytest.raises(torch.OutOfMemoryError):
        gb.geneval_kind({}, manifest, cell, detector=FailingDetector(torch.OutOfMemoryError("no memory")),
                        color_classifier=FakeColors({}))
    unreadable = manifest.iloc[[1]]
    scores, errors, _ = gb.geneval_kind({}, unreadable, cell, detector=FailingDetector(RuntimeError("unused")),
                                        color_classifier=FakeColors({}))
    assert math.isnan(scores[0]) and "cannot read image" in errors[0]
