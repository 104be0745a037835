"""GenEval on the shapes world (evals/shapes/geneval.py, oracle.ShapesGenevalOracle): the shipped prompts are
reproduced by their generator, follow GenEval's templates and metadata, and the real GenEval rules score the
render of each prompt's scene 1 and shuffled pairs 0, through the rule functions and through the scorer kind."""
import json
from pathlib import Path

import pytest

from evals.benchmarks import loaders
from evals.metrics import geneval as ge
from evals.metrics import geneval_backends as gb
from evals.shapes import geneval as shapes_geneval
from evals.shapes import oracle, world

SHIPPED = Path(__file__).resolve().parents[1] / "evals" / "benchmarks" / "data" / "shapes"
ORACLE = oracle.ShapesGenevalOracle()


@pytest.fixture(scope="module")
def shipped():
    """[(GenEval record, scene)] of the shipped prompt file, in line order."""
    records = [json.loads(line) for line in (SHIPPED / "geneval.jsonl").read_text().splitlines()]
    scenes = [json.loads(line) for line in (SHIPPED / "geneval_scenes.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in scenes] == [r["prompt"] for r in records]
    return [(r, world.Scene.from_json(s["scene"])) for r, s in zip(records, scenes)]


def test_generator_reproduces_the_shipped_files(tmp_path):
    prompts, scenes = shapes_geneval.write_prompts(tmp_path, 0, 24)
    assert prompts.read_bytes() == (SHIPPED / "geneval.jsonl").read_bytes()
    assert scenes.read_bytes() == (SHIPPED / "geneval_scenes.jsonl").read_bytes()
    frame = loaders.load_prompts("shapes", "geneval")  # the protocol's hash-checked copy
    assert len(frame) == 100 and frame["prompt"].is_unique


def test_prompts_follow_genevals_templates_and_metadata(shipped):
    by_tag = {}
    for record, scene in shipped:
        meta = ge.parse_metadata(record)
        by_tag.setdefault(meta["tag"], []).append((record, scene))
        assert all(c["class"] in world.SHAPES for c in meta["include"] + meta.get("exclude", []))
    assert list(by_tag) == list(ge.TAGS)  # GenEval's order
    assert {t: len(v) for t, v in by_tag.items()} == {"single_object": 4, "two_object": 12, "counting": 12,
                                                      "colors": 24, "position": 24, "color_attr": 24}
    record, scene = by_tag["counting"][0]
    n = len(scene.objects)
    assert record["include"] == [{"class": scene.objects[0].shape, "count": n}]
    assert record["exclude"] == [{"class": scene.objects[0].shape, "count": n + 1}]
    assert record["prompt"] == f"a photo of {shapes_geneval.NUMBERS[n]} {shapes_geneval.PLURALS[scene.objects[0].shape]}"
    record, scene = by_tag["position"][0]
    first, second = scene.objects
    relation = record["include"][1]["position"][0]
    assert record["prompt"] == f"a photo of a{'n' * (first.shape[0] in 'aeiou')} {first.shape} {relation} " \
                               f"a{'n' * (second.shape[0] in 'aeiou')} {second.shape}"
    assert record["include"][0]["class"] == second.shape and record["include"][1]["position"] == [relation, 0]
    # colour compositions are held out of training, like the T2I-CompBench-style sets
    assert all(world.split_of(scene, 0) == "test" for _, scene in by_tag["color_attr"])


def test_a_tag_with_fewer_distinct_prompts_gets_all_of_them():
    assert sorted(r["prompt"] for r, _ in shapes_geneval.prompt_set(0, "single_object", 50)) == sorted(
        f"a photo of {'an' if s[0] in 'aeiou' else 'a'} {s}" for s in world.SHAPES)
    with pytest.raises(ValueError, match="unknown GenEval tag"):
        shapes_geneval.prompt_set(0, "numeracy", 5)


@pytest.mark.parametrize("size", [32, 64])
def test_genevals_rules_score_renders_one_and_shuffled_pairs_zero(size, shipped):
    for i, (record, scene) in enumerate(shipped):
        image = world.render(scene, size)
        result = ge.evaluate_image(ORACLE.detect(image), record, image, ORACLE)
        assert result.correct, (record["prompt"], result.reason)
        same_tag = [r for r, _ in shipped if r["tag"] == record["tag"]]
        other = same_tag[(same_tag.index(record) + 1) % len(same_tag)]  # the next prompt of the same task
        assert not ge.evaluate_image(ORACLE.detect(image), other, image, ORACLE).correct, other["prompt"]


def test_oracle_backend_contract():
    scene = world.Scene("color", (world.SceneObject("circle", "red", "medium", "striped", (0.05, 0.05, 0.37, 0.37)),
                                  world.SceneObject("cross", "blue", "medium", "plain", (0.55, 0.55, 0.87, 0.87))))
    image = world.render(scene, 64)
    detections = ORACLE.detect(image)
    assert [(d.label, d.score) for d in detections] == [("circle", 1.0), ("cross", 1.0)]
    assert detections[0].box_xyxy == tuple(float(v) for v in world.pixel_box(scene.objects[0], 64))
    assert ORACLE.classify(image, detections, "circle") == ["red", "blue"]
    # another detector's box, a pixel off the parsed one, still gets that object's colour (it was "black")
    x0, y0, x1, y1 = detections[1].box_xyxy
    assert ORACLE.classify(image, [ge.MaskedDetection("cross", 0.9, (x0 + 1, y0, x1 + 1, y1))], "cross") == ["blue"]
    elsewhere = ge.MaskedDetection("circle", 1.0, (0.0, 0.0, 3.0, 3.0))  # overlaps no parsed object
    with pytest.raises(ValueError, match="overlaps no object"):
        ORACLE.classify(image, [elsewhere], "circle")
    assert ORACLE.fingerprint == oracle.ShapesOracle.fingerprint


def test_scorer_kind_selects_the_oracle_from_settings(tmp_path, shipped):
    frame = loaders.load_prompts("shapes", "geneval")
    cell = tmp_path / "cell"
    cell.mkdir()
    scenes = dict((r["prompt"], s) for r, s in shipped)
    for row in frame.itertuples():
        world.render(scenes[row.prompt], 64).save(cell / f"{row.sample_id}.png")
    manifest = frame.assign(file=[f"{s}.png" for s in frame["sample_id"]])
    settings = {"detector": "shapes_oracle", "color_classifier": "shapes_oracle"}
    scores, errors, meta = gb.geneval_kind(settings, manifest, cell)
    assert scores.tolist() == [1.0] * 100 and errors == [None] * 100
    assert meta["overall"] == 1.0 and set(meta["task_scores"]) == set(ge.TAGS)
    assert meta["scorer"] == "geneval_shapes_oracle" and meta["weights_fingerprint"].startswith(ORACLE.fingerprint)
    assert meta["deviations"] == ["detector: shapes_oracle instead of Mask2Former",
                                  "colour classifier: shapes_oracle instead of CLIP ViT-L/14"]

    shuffled = manifest.assign(metadata=list(manifest["metadata"][1:]) + [manifest["metadata"].iloc[0]])
    scores, _, meta = gb.geneval_kind(settings, shuffled.assign(prompt="not a GenEval prompt"), cell)
    assert meta["overall"] < 0.3 and scores.mean() < 0.3  # each image judged by its neighbour's clauses
