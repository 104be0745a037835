"""The shapes world (evals.shapes.world): deterministic scenes, geometry that satisfies T2I-CompBench's 2D
rule, captions that say what is drawn, held-out test compositions, frozen parses in the freeze tool's
format, the writers, the CLI and the shipped prompt sets."""
import importlib.util
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from evals.benchmarks import loaders
from evals.benchmarks.protocols import load_protocol
from evals.metrics import compbench as cb
from evals.shapes import world
from evals.shapes.__main__ import main as shapes_cli

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "evals" / "benchmarks" / "data" / "shapes"


@pytest.fixture(scope="module")
def train_scenes():
    return world.scenes(0, "train", 1500)


@pytest.fixture(scope="module")
def prompt_sets():
    return {c: world.prompt_scenes(0, c, 50) for c in world.PROMPT_CATEGORIES}


def test_scenes_are_deterministic_per_seed_and_index():
    first = world.scenes(3, "train", 40)
    assert first == world.scenes(3, "train", 40)
    assert world.scene_at(3, "train", 17) == first[17]  # any index on its own
    assert [s.caption for s in first] != [s.caption for s in world.scenes(4, "train", 40)]
    assert world.prompt_scenes(3, "spatial", 10) == world.prompt_scenes(3, "spatial", 10)


def test_every_category_appears_with_its_structure(train_scenes):
    by_category = {c: [s for s in train_scenes if s.category == c] for c in world.CATEGORIES}
    assert all(len(v) > 50 for v in by_category.values())
    for s in by_category["color"] + by_category["spatial"]:
        assert {(o.size, o.texture) for o in s.objects} == {("medium", "plain")}
    for s in by_category["shape"]:
        assert sorted(o.size for o in s.objects) == ["large", "small"]
    for s in by_category["texture"]:
        assert sorted(o.texture for o in s.objects) == ["dotted", "striped"]
    for s in by_category["complex"]:
        assert s.relation in world.COMPLEX_RELATIONS
    assert {len(s.objects) for s in by_category["single"]} == {1}
    assert {len(s.objects) for s in by_category["multi"]} == {3}
    assert {s.relation for s in by_category["spatial"]} == set(world.RELATIONS)


def _pixel_boxes(scene, size):
    return [world.pixel_box(o, size) for o in scene.objects]


def test_objects_never_overlap_and_stay_inside(train_scenes):
    for scene in train_scenes:
        for size in (32, 64, 128):
            boxes = _pixel_boxes(scene, size)
            assert all(0 <= b[0] < b[2] <= size and 0 <= b[1] < b[3] <= size for b in boxes)
            for a, b in combinations(boxes, 2):  # at least one background pixel between any two boxes
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (scene.caption, size)


def test_relations_hold_for_the_compbench_2d_rule_with_margin(train_scenes, prompt_sets):
    related = [s for s in train_scenes if s.relation] + prompt_sets["spatial"] + prompt_sets["complex"]
    assert len(related) > 300
    for scene in related:
        (x1, y1), (x2, y2) = (o.centre for o in scene.objects)
        dx, dy = x2 - x1, y2 - y1
        if scene.relation == "next to":
            assert abs(dy) < world.NEXT_TO_MAX_OFFSET
        else:
            along, across = (dx, dy) if scene.relation in ("on the left of", "on the right of") else (dy, dx)
            assert abs(along) - abs(across) >= world.RELATION_MARGIN - 1e-9
        for size in (32, 64, 128):
            frame = cb.detector_frame_size(size, size)[0] / size
            box1, box2 = ([v * frame for v in b] for b in _pixel_boxes(scene, size))
            assert cb.find_relation(scene.caption, cb.SPATIAL_2D_RELATIONS) == scene.relation
            assert cb.spatial_2d_position_score(scene.relation, box1, box2) == 1.0, (scene.caption, size)


def test_captions_say_exactly_what_is_drawn(train_scenes):
    for scene in train_scenes:
        caption = scene.caption
        tokens, chunks = world.caption_tokens(scene)
        assert cb.span_text(tokens, 0, len(tokens)) == caption
        words = caption.replace(",", "").split()
        for obj in scene.objects:
            assert obj.phrase() in chunks and obj.phrase() in caption
            assert (obj.size in words) == (obj.size != "medium")
            assert (obj.texture in words) == (obj.texture != "plain")
        assert sum(w in world.SHAPES for w in words) == len(scene.objects)
        assert sum(w in world.COLOURS for w in words) == len(scene.objects)
        assert (scene.relation is not None) == any(r in caption for r in world.RELATIONS)
        assert caption.startswith(scene.objects[0].phrase())
        assert 0 <= scene.label < world.NUM_CLASSES
        assert world.Scene.from_json(json.dumps(scene.to_json())) == scene
    assert world.scene_at(0, "train", 0).caption == "a blue striped triangle and a yellow dotted circle"


def test_rendering_uses_only_the_world_colours_at_any_size(train_scenes):
    allowed = {world.BACKGROUND, world.INK, *world.COLOURS.values()}
    for size in (32, 64, 128):
        for scene in train_scenes[:20]:
            image = world.render(scene, size)
            assert image.size == (size, size) and image.mode == "RGB"
            assert {tuple(c) for c in np.asarray(image).reshape(-1, 3)} <= allowed


def test_test_compositions_never_appear_in_train(train_scenes, prompt_sets):
    train_captions = {s.caption for s in train_scenes}
    train_keys = {world.composition_key(s) for s in train_scenes} - {None}
    for category, members in prompt_sets.items():
        assert len({s.caption for s in members}) == 50
        for scene in members:
            assert world.split_of(scene, 0) == "test" and scene.category == category
            assert scene.caption not in train_captions and world.composition_key(scene) not in train_keys
    test_keys = {world.composition_key(s) for s in world.scenes(0, "test", 500)} - {None}
    assert test_keys and not test_keys & train_keys
    # word order does not leak a composition into the other split
    a, b = world.prompt_scenes(0, "spatial", 1)[0].objects
    mirrored = world.Scene("spatial", (b, a), {"on the left of": "on the right of", "on the right of": "on the left of",
                                               "on the top of": "on the bottom of", "on the bottom of": "on the top of",
                                               "next to": "next to"}[world.prompt_scenes(0, "spatial", 1)[0].relation])
    assert world.split_of(mirrored, 0) == "test"


def test_too_many_prompts_for_a_category_fails_with_the_fix():
    with pytest.raises(ValueError, match=r"category 'color' has only \d+ distinct test captions.*--n"):
        world.prompt_scenes(0, "color", 1000)


def _freeze_tool():
    spec = importlib.util.spec_from_file_location("freeze_compbench_parse", ROOT / "tools" / "freeze_compbench_parse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _TemplateNlp:
    """spaCy stand-in for the freeze tool: the caption's template tokens as a spaCy-like doc."""

    def __init__(self, scenes):
        self.by_caption = {s.caption: world.caption_tokens(s) for s in scenes}

    def __call__(self, text):
        tokens, chunks = self.by_caption[text]

        class Tok:
            def __init__(self, t):
                self.text, self.pos_, self.whitespace_ = t.text, t.pos, t.ws

        class Chunk:
            def __init__(self, text):
                self.text = text

        class Doc(list):
            noun_chunks = [Chunk(c) for c in chunks]

        return Doc(Tok(t) for t in tokens)


def test_parse_records_are_the_freeze_tools_records(prompt_sets, train_scenes):
    tool = _freeze_tool()
    table = cb.NounTable.from_file(world.NEW_OBJECTS)
    scenes = [s for members in prompt_sets.values() for s in members] + train_scenes[:200]
    nlp = _TemplateNlp(scenes)
    for scene in scenes:
        assert world.parse_record(scene, table) == tool.parse_record(nlp, scene.caption, table)
    record = world.parse_record(prompt_sets["complex"][0], table)
    assert len(record["objects_complex"]) == 2 and record["objects_2d"] == record["objects_complex"]


def test_written_prompt_sets_reproduce_the_shipped_files_and_the_scorers_find_their_parses(tmp_path):
    written = world.write_prompt_sets(tmp_path, 0, 50, 200)
    assert sorted(written) == sorted((*world.PROMPT_CATEGORIES, "fid"))
    for path in sorted(tmp_path.iterdir()):
        assert path.read_bytes() == (SHIPPED / path.name).read_bytes(), path.name
    for name, path in written.items():
        prompts = loaders.compbench_prompts(path)
        by_absolute = cb.load_prompt_parses(str(path))  # an absolute val_file is used as is
        by_relative = cb.load_prompt_parses(f"../shapes/{name}.txt")  # the shipped copy, from the parse folder
        assert set(prompts) == set(by_absolute) == set(by_relative)
    spatial = cb.load_prompt_parses(str(written["spatial"]))
    assert all(p.objects_2d[0] in world.SHAPES and p.objects_2d[1] in world.SHAPES for p in spatial.values())


def test_protocol_loads_every_subset_hash_checked():
    protocol = load_protocol("shapes")
    for key in protocol.spec["auxiliary"]:
        protocol.auxiliary_file(key)
    for subset in (*world.PROMPT_CATEGORIES, "fid"):
        frame = loaders.load_prompts("shapes", subset)
        assert len(frame) == (200 if subset == "fid" else 50)
        assert frame.attrs["protocol"]["benchmark"] == "shapes"
    complex_meta = {json.loads(m)["complex_group"] for m in loaders.load_prompts("shapes", "complex")["metadata"]}
    assert complex_meta == {"spatial"}


def test_write_dataset_is_deterministic_and_documents_every_image(tmp_path):
    first = world.write_dataset(tmp_path / "a", 12, "train", 5, 32)
    second = world.write_dataset(tmp_path / "b", 12, "train", 5, 32)
    assert first.read_bytes() == second.read_bytes()
    rows = world.read_captions(tmp_path / "a")
    assert [r["file"] for r in rows] == [f"{i:05d}.png" for i in range(12)]
    for row in rows:
        assert (tmp_path / "a" / row["file"]).read_bytes() == (tmp_path / "b" / row["file"]).read_bytes()
        assert row["caption"] == row["scene"].caption and row["label"] == row["scene"].label
    assert set(json.loads(first.read_text().splitlines()[0])) == {"file", "caption", "label", "scene"}
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        world.write_dataset(tmp_path / "c", 1, "val", 0)
    # rewritten with fewer scenes: the images beyond them go (the VAE trainer globs *.png)
    world.write_dataset(tmp_path / "a", 5, "train", 5, 32)
    assert sorted(p.name for p in (tmp_path / "a").glob("*.png")) == [f"{i:05d}.png" for i in range(5)]


def test_bad_scene_records_are_named_with_file_and_line(tmp_path):
    good = world.scenes(0, "train", 1)[0].to_json()
    bad_box = {**good, "objects": [{**good["objects"][0], "bbox": [0.9, 0.9, 0.1]}]}
    with pytest.raises(ValueError, match="bbox"):
        world.Scene.from_json(bad_box)
    with pytest.raises(ValueError, match="needs relation"):
        world.Scene.from_json({**good, "category": "spatial", "relation": None, "objects": good["objects"] * 2})
    folder = tmp_path / "data"
    world.write_dataset(folder, 2, "train", 0, 32)
    lines = (folder / "captions.jsonl").read_text().splitlines()
    (folder / "captions.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ValueError, match=r"captions.jsonl:2: .*python -m evals.shapes"):
        world.read_captions(folder)


def test_cli_writes_each_kind_and_prints_one_summary_line(tmp_path, capsys):
    shapes_cli(["train", "--out", str(tmp_path / "train"), "--n", "4", "--seed", "1", "--size", "32"])
    shapes_cli(["reference", "--out", str(tmp_path / "ref"), "--n", "6", "--seed", "1"])
    shapes_cli(["prompts", "--out", str(tmp_path / "prompts"), "--n", "5", "--n-fid", "6", "--seed", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and "4 images of 32 px" in lines[0] and "5 per category" in lines[2]
    ref_captions = [r["caption"] for r in world.read_captions(tmp_path / "ref")]
    assert ref_captions == loaders.compbench_prompts(tmp_path / "prompts" / "fid.txt")  # the FID pairs
    with pytest.raises(SystemExit, match="distinct test captions"):
        shapes_cli(["prompts", "--out", str(tmp_path / "p2"), "--n", "500"])
