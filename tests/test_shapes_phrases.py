"""The per-phrase presence diagnostic (evals.shapes.phrases): it must tell "the asked colours and shapes are
drawn, but on the wrong objects" apart from "bound as asked", on renders of the world's own scenes."""
import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from evals.shapes import phrases, world

SHIPPED = Path(__file__).resolve().parents[1] / "evals" / "benchmarks" / "data" / "shapes"


@pytest.fixture(scope="module")
def colour_scenes():
    records = [json.loads(line) for line in (SHIPPED / "scenes.jsonl").read_text(encoding="utf-8").splitlines()]
    return [world.Scene.from_json(r["scene"]) for r in records if r["set"] == "color"][:24]


def _cell(folder: Path, images, prompts) -> Path:
    folder.mkdir()
    names = [f"p{i:06d}_00.png" for i in range(len(prompts))]
    for image, name in zip(images, names):
        image.save(folder / name)
    pd.DataFrame({"prompt": prompts, "file": names}).to_parquet(folder / "manifest.parquet")
    return folder


def _colours_swapped(scene: world.Scene) -> world.Scene:
    first, second = scene.objects
    return dataclasses.replace(scene, objects=(dataclasses.replace(first, colour=second.colour),
                                               dataclasses.replace(second, colour=first.colour)))


def test_object_phrases_are_runs_of_world_words_ending_in_a_shape():
    assert phrases.object_phrases("a large red square on the right of a small orange dotted cross") == [
        "large red square", "small orange dotted cross"]
    assert phrases.object_phrases("a yellow cross next to a blue square") == ["yellow cross", "blue square"]
    assert phrases.object_phrases("a photo of red") == []


def test_own_renders_hit_every_phrase_and_rotated_prompts_do_not(tmp_path, colour_scenes):
    cell = _cell(tmp_path / "cell", [world.render(s) for s in colour_scenes], [s.caption for s in colour_scenes])
    report = phrases.cell_report(cell)
    assert report["asked"] == {"phrases": 48, "colour": 1.0, "shape": 1.0, "all": 1.0}
    assert report["objects"] == report["named_objects"] == 48
    assert report["baseline"]["all"] < 0.3
    assert report["baseline"]["colour"] < 1.0 and report["baseline"]["shape"] < 1.0


def test_the_baseline_rotates_prompts_not_images(tmp_path, colour_scenes):
    """With 4 images per prompt, rotating the image list by one paired most images with their own prompt
    (baseline 0.76 instead of ~0.03)."""
    scenes = [s for s in colour_scenes[:6] for _ in range(4)]
    cell = _cell(tmp_path / "cell", [world.render(s) for s in scenes], [s.caption for s in scenes])
    report = phrases.cell_report(cell)
    assert report["asked"]["all"] == 1.0 and report["baseline"]["all"] < 0.3


def test_swapped_colours_are_present_but_not_bound(tmp_path, colour_scenes):
    """The failure a binding score of 0 hides: every asked colour and shape drawn, each colour on the other shape."""
    scenes = [s for s in colour_scenes if s.objects[0].colour != s.objects[1].colour
              and s.objects[0].shape != s.objects[1].shape]
    images = [world.render(_colours_swapped(s)) for s in scenes]
    report = phrases.cell_report(_cell(tmp_path / "cell", images, [s.caption for s in scenes]))
    assert report["asked"] == {"phrases": 2 * len(scenes), "colour": 1.0, "shape": 1.0, "all": 0.0}
    assert "colour 1.00" in phrases.format_report(report)


def test_cli_prints_one_line_per_cell_and_names_a_folder_that_is_not_a_cell(tmp_path, colour_scenes, capsys):
    cell = _cell(tmp_path / "cell", [world.render(colour_scenes[0])], [colour_scenes[0].caption])
    phrases.main([str(cell)])
    # one prompt: no other prompt to rotate onto, so no baseline (it equalled the asked rates)
    assert capsys.readouterr().out.startswith(f"{cell}: 2 phrases in 1 images; present: colour 1.00 (n/a)")
    with pytest.raises(SystemExit, match="no manifest.parquet"):
        phrases.main([str(tmp_path)])
    (cell / "p000000_00.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(SystemExit, match="1 unreadable image.*p000000_00.png"):
        phrases.main([str(cell)])
