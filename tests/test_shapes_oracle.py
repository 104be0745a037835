"""The shapes-world oracle (evals.shapes.oracle): exact recovery of rendered scenes, the detector and VQA
contracts, the real T2I-CompBench rules scored through it (1 on an image of its own caption, low on shuffled
pairs), and the scorer kinds selecting it from settings."""
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evals.benchmarks import loaders
from evals.metrics import compbench as cb
from evals.metrics import compbench_scorers as cs
from evals.shapes import oracle, world
from evals.shapes.oracle import ShapesOracle

SHIPPED = Path(__file__).resolve().parents[1] / "evals" / "benchmarks" / "data" / "shapes"
ORACLE = ShapesOracle()


@pytest.fixture(scope="module")
def prompt_scenes():
    """Set name -> scenes of the shipped prompt files, in line order."""
    sets: dict[str, list] = {}
    for line in (SHIPPED / "scenes.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        sets.setdefault(record["set"], []).append(world.Scene.from_json(record["scene"]))
    return sets


def _attributes(objects):
    return sorted((o.shape, o.colour, o.size, o.texture) for o in objects)


@pytest.mark.parametrize("size", [32, 64])
def test_parser_recovers_every_object_of_rendered_scenes(size, prompt_scenes):
    scenes = world.scenes(0, "test", 150) + [s for members in prompt_scenes.values() for s in members[:20]]
    for scene in scenes:
        parsed = oracle.parse_scene(world.render(scene, size))
        assert _attributes(parsed) == _attributes(scene.objects), (scene.caption, size)
        for obj in scene.objects:
            match = next(p for p in parsed if (p.shape, p.colour) == (obj.shape, obj.colour))
            assert max(abs(a - b) for a, b in zip(match.box, world.pixel_box(obj, size))) <= 1
            assert match.shape_iou > 0.99


def test_every_object_the_world_draws_parses_back_at_every_size_the_cli_accepts():
    """Each shape x size x texture alone, at every image side from MIN_SIZE_PX to 129: textures were anchored at
    the box corner, and a small textured cross came out plain at 19-27, 48-56 and 81 px."""
    wrong = []
    for size in range(world.MIN_SIZE_PX, 130):
        for shape, name, texture in itertools.product(world.SHAPES, world.SIZES, world.TEXTURES):
            side = world.SIZES[name]
            obj = world.SceneObject(shape, "red", name, texture, (0.3, 0.3, 0.3 + side, 0.3 + side))
            got = _attributes(oracle.parse_scene(world.render(world.Scene("single", (obj,)), size)))
            if got != [(shape, "red", name, texture)]:
                wrong.append((size, shape, name, texture, got))
    assert not wrong, wrong[:5]


def test_parser_tolerates_pixel_noise():
    rng = np.random.default_rng(0)
    for scene in world.scenes(1, "test", 40):
        pixels = np.asarray(world.render(scene, 64)).astype(int) + rng.integers(-12, 13, (64, 64, 3))
        parsed = oracle.parse_scene(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
        assert _attributes(parsed) == _attributes(scene.objects), scene.caption


@pytest.mark.parametrize("width", [1, 2, 3])
def test_parser_takes_slivers_one_or_two_pixels_wide(width):
    """A generated image may hold a thin streak: every template (the cross's arms included) fits its box."""
    pixels = np.full((64, 64, 3), world.BACKGROUND, np.uint8)
    pixels[10:40, 20:20 + width] = world.COLOURS["red"]
    pixels[50:50 + width, 5:45] = world.COLOURS["blue"]
    parsed = oracle.parse_scene(Image.fromarray(pixels))
    assert sorted(o.colour for o in parsed) == ["blue", "red"]
    assert {o.box for o in parsed} == {(20, 10, 20 + width, 40), (5, 50, 45, 50 + width)}
    for shape in world.SHAPES:
        assert world.shape_mask(shape, width, 30).shape == (30, width)


def test_what_the_world_never_draws_is_no_world_object():
    """A bar, an ellipse, a speck, a frame-filling smear: no shape (the world draws square boxes of its three
    sizes); a grey square with a few red pixels: no colour. Before, each was a confident world object."""
    def canvas():
        return np.full((64, 64, 3), world.BACKGROUND, np.uint8)

    bar, speck = canvas(), canvas()
    bar[20:30, 10:60] = world.COLOURS["red"]
    speck[30:38, 30:34] = world.COLOURS["green"]
    ellipse = Image.fromarray(canvas())
    from PIL import ImageDraw
    ImageDraw.Draw(ellipse).ellipse((5, 25, 60, 36), fill=world.COLOURS["blue"])
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    grey = canvas()
    grey[10:40, 10:40] = (128, 128, 128)
    grey[20, 20:23] = world.COLOURS["red"]
    for name, image in (("bar", bar), ("speck", speck), ("ellipse", ellipse), ("noise", noise),
                        ("flat grey", np.full((64, 64, 3), 128, np.uint8))):
        parsed = oracle.parse_scene(image)
        assert parsed and all(o.shape is None for o in parsed), name
        assert ORACLE.detect(Image.fromarray(np.asarray(image)), list(world.SHAPES)) == [], name
    [obj] = oracle.parse_scene(grey)
    assert obj.shape == "square" and obj.colour is None
    assert ORACLE.question_probabilities([Image.fromarray(grey)], [["a red square?"]])[0] == [0.0]


def test_input_that_is_not_an_rgb_image_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="uint8"):
        oracle.parse_scene(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="convert"):
        oracle.parse_scene(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="at least 8 px"):
        oracle.parse_scene(np.zeros((0, 0, 3), np.uint8))
    rgba = np.dstack([np.asarray(world.render(world.scenes(0, "test", 1)[0], 64)), np.full((64, 64), 255, np.uint8)])
    assert oracle.parse_scene(rgba) == oracle.parse_scene(rgba[..., :3])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_detector_contract_in_the_detector_frame(size, prompt_scenes):
    for scene in prompt_scenes["spatial"][:15]:
        frame = cb.to_detector_frame(world.render(scene, size))
        shapes = [o.shape for o in scene.objects]
        detections = ORACLE.detect(frame, shapes)
        assert sorted(d.label for d in detections) == sorted(shapes)
        assert all(d.score == 1.0 for d in detections)
        assert detections == sorted(detections, key=lambda d: -(d.box_xyxy[2] - d.box_xyxy[0]) * (d.box_xyxy[3] - d.box_xyxy[1]))
        scale = frame.width / size
        for obj in scene.objects:
            box = next(d.box_xyxy for d in detections if d.label == obj.shape)
            expected = [v * scale for v in world.pixel_box(obj, size)]
            assert max(abs(a - b) for a, b in zip(box, expected)) <= scale  # within one source pixel
        assert [d.label for d in ORACLE.detect(frame, shapes[:1])] == shapes[:1]
        assert ORACLE.detect(frame, ["person"]) == []


def test_vqa_answers_by_the_attributes_a_question_names():
    big = world.SceneObject("circle", "red", "large", "striped", (0.05, 0.05, 0.47, 0.47))
    small = world.SceneObject("square", "blue", "small", "plain", (0.6, 0.6, 0.84, 0.84))
    image = world.render(world.Scene("color", (big, small)), 64)
    questions = ["a large red striped circle?", "a red circle?", "a circle?", "a small blue square?", "the top?",
                 "a blue circle?", "a small red circle?", "a dotted circle?", "a red blue circle?", "a red triangle?"]
    probabilities = ORACLE.question_probabilities([image], [questions], np_num=len(questions))[0]
    assert probabilities == [1.0] * 5 + [oracle.MISS_PROBABILITY] * 5
    assert ORACLE.question_probabilities([image], [questions], np_num=2) == [[1.0, 1.0]]
    assert ORACLE.image_scores([image, image], [questions[:4], questions[4:6]]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="2 images but 1 question lists"):
        ORACLE.question_probabilities([image, image], [questions])


def test_fingerprint_is_what_the_scorers_record():
    assert cs.backend_fingerprint(ORACLE) == ShapesOracle.fingerprint
    assert len(ShapesOracle.fingerprint) == 16 and ORACLE.name == "shapes_oracle"


def _blip_scores(scenes, captions, parses, size):
    images = [world.render(s, size) for s in scenes]
    return np.array(ORACLE.image_scores(images, [list(parses[c].blip_questions) for c in captions]))


def _spatial_scores(scenes, captions, parses, size, complex_mode=False):
    scores = []
    for scene, caption in zip(scenes, captions):
        parse = parses[caption]
        obj1, obj2 = cb.complex_object_pair(parse.tokens) if complex_mode else parse.objects_2d
        frame = cb.to_detector_frame(world.render(scene, size))
        detections = ORACLE.detect(frame, [obj1, obj2])
        scores.append(cb.spatial_2d_image_score(obj1, obj2, cb.find_relation(caption, cb.SPATIAL_2D_RELATIONS),
                                                detections))
    return np.array(scores)


@pytest.mark.parametrize("size", [32, 64])
def test_compbench_rules_through_the_oracle_give_one_on_own_captions_and_low_when_shuffled(size, prompt_scenes):
    for name in ("color", "shape", "texture", "spatial", "complex"):
        scenes = prompt_scenes[name][:30]
        parses = cb.load_prompt_parses(f"../shapes/{name}.txt")
        captions = [s.caption for s in scenes]
        shuffled = captions[1:] + captions[:1]
        if name == "spatial":
            own, other = (_spatial_scores(scenes, c, parses, size) for c in (captions, shuffled))
        else:
            own, other = (_blip_scores(scenes, c, parses, size) for c in (captions, shuffled))
            if name == "complex":
                spatial_own = _spatial_scores(scenes, captions, parses, size, complex_mode=True)
                spatial_other = _spatial_scores(scenes, shuffled, parses, size, complex_mode=True)
                own = np.array([cb.three_in_one("spatial", a, s, np.nan) for a, s in zip(own, spatial_own)])
                other = np.array([cb.three_in_one("spatial", a, s, np.nan) for a, s in zip(other, spatial_other)])
        assert own.min() == 1.0, (name, size)
        assert other.mean() < 0.5, (name, size, other.mean())


def _write_cell(root: Path, scenes, subset: str, size: int = 64, captions=None) -> pd.DataFrame:
    """Rendered images of `scenes` captioned by `captions` (default: their own), with the loader's metadata."""
    root.mkdir(parents=True, exist_ok=True)
    metadata = dict(zip(*(loaders.load_prompts("shapes", subset)[k] for k in ("prompt", "metadata"))))
    rows = []
    for i, (scene, caption) in enumerate(zip(scenes, captions or [s.caption for s in scenes])):
        name = f"p{i:06d}_00.png"
        world.render(scene, size).save(root / name)
        rows.append({"sample_id": name[:-4], "prompt_id": f"p{i:06d}", "image_index": 0, "prompt": caption,
                     "file": name, "metadata": metadata[caption]})
    manifest = pd.DataFrame(rows)
    manifest.to_parquet(root / "manifest.parquet")
    return pd.read_parquet(root / "manifest.parquet")


def test_scorer_kinds_select_the_oracle_from_settings(tmp_path, prompt_scenes):
    color = prompt_scenes["color"][:8]
    manifest = _write_cell(tmp_path / "color", color, "color")
    scores, errors, meta = cs.compbench_blip_vqa_kind({"vqa": "shapes_oracle", "val_file": "../shapes/color.txt"},
                                                      manifest, tmp_path / "color")
    assert scores.tolist() == [1.0] * 8 and errors == [None] * 8
    assert meta["backend"] == "shapes_oracle" and meta["weights_fingerprint"] == ShapesOracle.fingerprint

    swapped = [s.caption for s in color[1:] + color[:1]]
    manifest = _write_cell(tmp_path / "color_shuffled", color, "color", captions=swapped)
    scores, _, _ = cs.compbench_blip_vqa_kind({"vqa": "shapes_oracle", "val_file": "../shapes/color.txt"},
                                              manifest, tmp_path / "color_shuffled")
    assert scores.mean() < 0.5

    spatial = prompt_scenes["spatial"][:8]
    manifest = _write_cell(tmp_path / "spatial", spatial, "spatial", size=32)
    scores, errors, meta = cs.compbench_spatial_2d_kind(
        {"detector": "shapes_oracle", "val_file": str(SHIPPED / "spatial.txt")}, manifest, tmp_path / "spatial")
    assert scores.tolist() == [1.0] * 8 and meta["scorer"] == "compbench_spatial2d_shapes_oracle"
    assert meta["n_both_objects_detected"] == 8

    complex_ = prompt_scenes["complex"][:8]
    manifest = _write_cell(tmp_path / "complex", complex_, "complex")
    scores, errors, meta = cs.compbench_complex_kind(
        {"vqa": "shapes_oracle", "detector": "shapes_oracle", "val_file": "../shapes/complex.txt"},
        manifest, tmp_path / "complex")
    assert scores.tolist() == [1.0] * 8 and meta["n_by_group"]["spatial"] == 8 and meta["clip"] is None
