"""T2I-CompBench(++) scoring: worked examples of reference/benchmarks.md §1.3, property tests of the rules,
frozen spaCy parses, and the BLIP-VQA / OWLv2 / DPT adapters end to end on tiny random models."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evals.files import sha256_file
from evals.metrics import compbench as cb

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "evals" / "benchmarks" / "data" / "t2i_compbench"
if not PROMPTS.is_dir():
    PROMPTS = ROOT.parent / "shared" / "benchmarks" / "t2i_compbench"
VAL_FILES = (
    "color_val.txt", "shape_val.txt", "texture_val.txt", "spatial_val.txt", "non_spatial_val.txt",
    "complex_val.txt", "complex_val_spatial.txt", "complex_val_action.txt", "complex_val_spatialaction.txt",
    "3d_spatial_val.txt", "numeracy_val.txt", "legacy_7710d05/color_val.txt",
)


def det(label, score, box):
    return cb.Detection(label, score, tuple(float(v) for v in box))


def tokens(words_pos):
    """'a/DET dog/NOUN ...' -> Tokens separated by single spaces."""
    pairs = [w.rsplit("/", 1) for w in words_pos.split()]
    return [cb.Token(text, pos, " " if i < len(pairs) - 1 else "") for i, (text, pos) in enumerate(pairs)]


# ------------------------------------------------------------------ BLIP-VQA product rule


def test_blip_product_worked_example():
    assert cb.blip_vqa_image_score([0.90, 0.80]) == pytest.approx(0.72)
    assert cb.blip_vqa_image_score([0.90, 0.80], np_num=cb.NP_NUM_LEGACY) == pytest.approx(0.72)


def test_blip_np_num_and_rounding():
    probs = [0.91234, 0.8, 0.8]
    assert cb.blip_vqa_image_score(probs, np_num=1) == 0.9123  # p stored as '{:.4f}'
    assert cb.blip_vqa_image_score(probs, np_num=2) == 0.7298  # legacy: third chunk ignored
    assert cb.blip_vqa_image_score(probs) == 0.5839  # 8 slots, missing ones count 1
    assert cb.blip_vqa_image_score([]) == 1.0


def test_blip_questions_and_normalisation():
    chunks = ["A green bench", "top", "the left", "the side", "the right", "a car (red)"]
    assert cb.blip_questions(chunks) == ["A green bench?", "a car (red)?"]
    assert len(cb.blip_questions(chunks, dropped=())) == 6
    assert cb.normalize_question('A "car" (red)!*#:;~. ?') == "a car red ?"
    assert cb.normalize_question("Green bench?  ") == "green bench?"
    assert len(cb.normalize_question(" ".join(["w"] * 60)).split()) == 50


# ------------------------------------------------------------------ 2D spatial


def test_2d_worked_examples():
    dog, cat = det("dog", 0.9, (0, 0, 100, 100)), det("cat", 0.8, (200, 0, 300, 100))
    assert cb.spatial_2d_image_score("dog", "cat", "on the left of", [dog, cat]) == pytest.approx(0.925)
    swapped = [det("dog", 0.9, (200, 0, 300, 100)), det("cat", 0.8, (0, 0, 100, 100))]
    assert cb.spatial_2d_image_score("dog", "cat", "on the left of", swapped) == 0.0  # 0.425 -> 0
    overlap = [det("dog", 0.9, (0, 0, 200, 100)), det("cat", 0.8, (100, 0, 300, 100))]
    assert cb.spatial_2d_position_score("on the left of", (0, 0, 200, 100), (100, 0, 300, 100)) == pytest.approx(0.3)
    assert cb.spatial_2d_image_score("dog", "cat", "on the left of", overlap) == pytest.approx(0.575)


def test_2d_rule_details():
    a, below, far = (0, 0, 100, 100), (0, 300, 100, 400), (400, 400, 500, 500)
    assert cb.spatial_2d_position_score("on the top of", a, below) == 1.0  # obj2 lower -> obj1 on top
    assert cb.spatial_2d_position_score("on the bottom of", a, below) == 0.0
    assert cb.spatial_2d_position_score("on the bottom of", below, a) == 1.0
    assert cb.spatial_2d_position_score("on top of", a, below) == 0.0  # quirk: no branch
    assert cb.spatial_2d_position_score(None, a, below) == 0.0
    assert cb.spatial_2d_position_score("near", a, below) == 1.0  # |dx| < 150
    assert cb.spatial_2d_position_score("next to", a, far) == pytest.approx(150 / 400)
    # first relation word of the list wins, not the first in the prompt
    assert cb.find_relation("a cat on the left of a dog near a tree", cb.SPATIAL_2D_RELATIONS) == "near"
    assert cb.find_relation("a cup on top of a table", cb.SPATIAL_2D_RELATIONS) == "on top of"
    # one object only: 0.25*c < 0.5 -> 0; person alias; first detection of a label is used
    assert cb.spatial_2d_image_score("dog", "cat", "on the left of", [det("dog", 0.99, a)]) == 0.0
    people = [det("person", 0.9, a), det("person", 0.9, (600, 0, 700, 100)), det("cat", 0.9, (300, 0, 400, 100))]
    assert cb.spatial_2d_image_score("girl", "cat", "on the left of", people) == pytest.approx(0.95)
    assert cb.spatial_2d_image_score(None, None, "on the left of", people) == 0.0


def random_box(rng, size=480):
    x0, y0 = rng.uniform(0, size - 20), rng.uniform(0, size - 20)
    return (x0, y0, rng.uniform(x0 + 5, size), rng.uniform(y0 + 5, size))


def test_2d_properties_random():
    rng = random.Random(0)
    for _ in range(3000):
        rel = rng.choice([*cb.SPATIAL_2D_RELATIONS, None])
        dets = [det(rng.choice(["dog", "cat", "tree"]), rng.uniform(0.5, 1), random_box(rng)) for _ in range(rng.randint(0, 4))]
        s = cb.spatial_2d_image_score("dog", "cat", rel, dets)
        assert s == 0.0 or 0.5 <= s <= 1.0
        assert 0.0 <= cb.spatial_2d_position_score(rel, random_box(rng), random_box(rng)) <= 1.0


def test_2d_left_right_swap_flips_when_far_apart():
    rng = random.Random(1)
    for _ in range(500):
        y, h = rng.uniform(0, 200), rng.uniform(20, 100)
        xa = rng.uniform(0, 100)
        xb = xa + rng.uniform(250, 350)  # |dx| >= 250 > |dy| = 0, no overlap
        left, right = det("dog", rng.uniform(0.5, 1), (xa, y, xa + 80, y + h)), det("cat", rng.uniform(0.5, 1), (xb, y, xb + 80, y + h))
        assert cb.spatial_2d_image_score("dog", "cat", "on the left of", [left, right]) >= 0.5
        assert cb.spatial_2d_image_score("dog", "cat", "on the right of", [left, right]) == 0.0


def test_complex_mode_objects_and_on_top_quirk():
    toks = tokens("The/DET red/ADJ hat/NOUN was/AUX on/ADP top/NOUN of/ADP the/DET brown/ADJ coat/NOUN rack/NOUN ./PUNCT")
    assert cb.complex_objects(toks) == ["hat", "coat"]
    assert cb.complex_object_pair(toks) == ("hat", "coat")
    rel = cb.find_relation("The red hat was on top of the brown coat rack.", cb.SPATIAL_2D_RELATIONS)
    good = [det("hat", 0.9, (0, 0, 50, 50)), det("coat", 0.9, (0, 300, 50, 350))]
    assert rel == "on top of" and cb.spatial_2d_image_score("hat", "coat", rel, good) == 0.0
    # no noun after the preposition: first PROPN followed by a non-PROPN
    toks = tokens("a/DET dog/NOUN near/ADP New/PROPN York/PROPN today/PROPN !/PUNCT")
    assert cb.complex_objects(toks) == ["dog", "today"]
    assert cb.complex_object_pair(tokens("a/DET dog/NOUN sleeps/VERB")) == (None, None)
    assert cb.text_without_adjectives(tokens("The/DET red/ADJ hat/NOUN")) == "The hat"


# ------------------------------------------------------------------ 3D spatial


def test_3d_rule():
    depth = np.zeros((480, 480), dtype=np.float32)
    depth[0:100, :] = 0.9  # rows 0..99 = x range of box A under the transposed crop
    a, b = (0, 0, 100, 100), (50, 0, 150, 100)  # IoU = 5000/15000 = 1/3
    assert cb.spatial_3d_position_score("in front of", a, b, depth) == pytest.approx((1 / 3) / 0.5)
    assert cb.spatial_3d_position_score("behind", a, b, depth) == 0.0
    assert cb.spatial_3d_position_score("behind", b, a, depth) == pytest.approx((1 / 3) / 0.5)
    assert cb.spatial_3d_position_score("in front of", a, (0, 0, 100, 90), depth) == 0.0  # same region, no difference
    assert cb.spatial_3d_position_score("in front of", a, (300, 300, 400, 400), depth) == 0.0  # IoU 0
    assert cb.spatial_3d_position_score("in front of", (0, 0, 100, 100), (10, 0, 100, 100), depth) == 0.0  # d = 0
    dets = [det("dog", 0.8, a), det("desk", 0.6, b)]
    s = cb.spatial_3d_image_score("dog", "desk", "in front of", dets, depth)
    assert s == pytest.approx(0.2 + 0.15 + (2 / 3) / 2)
    assert cb.spatial_3d_image_score("dog", "desk", "in front of", dets[:1], depth) == pytest.approx(0.2)  # no cut
    # labels match by substring ("dog" in "hot dog"); "hidden" needs A farther, here it is closer -> pos 0
    assert cb.spatial_3d_image_score("dog", "desk", "hidden", [det("hot dog", 1, a), det("desk", 1, b)], depth) == 0.5


def test_3d_depth_crop_is_transposed():
    depth = np.zeros((360, 480), dtype=np.float32)
    depth[0:100, :] = 1.0  # image rows 0..99 (the top) are close
    a, b = (0, 150, 100, 250), (50, 150, 250, 250)  # both lie in rows 150..250 (depth 0), IoU 0.2
    # read as depth[x0:x1, y0:y1]: A -> rows 0..99 (mean 1), B -> rows 50..249 (mean 0.25), so A counts as
    # in front (0.2 / 0.5); an image-aligned crop would see no difference and give 0
    assert cb.spatial_3d_position_score("in front of", a, b, depth) == pytest.approx(0.4)


def test_3d_scores_in_unit_interval():
    rng = random.Random(2)
    depth = np.random.default_rng(0).random((360, 480)).astype(np.float32)
    for _ in range(500):
        dets = [det(rng.choice(["dog", "cat"]), rng.uniform(0.5, 1), random_box(rng)) for _ in range(rng.randint(0, 3))]
        rel = rng.choice([*cb.SPATIAL_3D_RELATIONS, None])
        assert 0.0 <= cb.spatial_3d_image_score("dog", "cat", rel, dets, depth) <= 1.0


# ------------------------------------------------------------------ numeracy


@pytest.fixture(scope="module")
def table():
    return cb.NounTable.from_file(PROMPTS / "new_objects.txt")


def test_numeracy_parse(table):
    assert cb.numeracy_targets("two boys".split(), table) == (["boy"], [2])
    assert cb.numeracy_targets("one turtle and three cats".split(), table) == (["turtle", "cat"], [1, 3])
    assert cb.numeracy_targets("a dog".split(), table) == (["dog"], [1])
    objects, counts = cb.numeracy_targets("a dogs".split(), table)  # quirk: object without count
    assert objects == ["dog"] and counts == []
    with pytest.raises(cb.NumeracyParseError):
        cb.numeracy_targets("two dog".split(), table)


def test_numeracy_score(table):
    box = lambda x: (x, 0, x + 50, 50)  # noqa: E731
    assert cb.numeracy_image_score(["boy"], [2], [det("person", 0.9, box(0)), det("person", 0.9, box(100))]) == 1.0
    assert cb.numeracy_image_score(["boy"], [2], [det("person", 0.9, box(0))]) == 0.5
    # a duplicate (> 90 % covered, same label) is merged before counting
    dup = [det("person", 0.9, box(0)), det("person", 0.8, (2, 2, 48, 48)), det("person", 0.9, box(100))]
    assert cb.numeracy_image_score(["boy"], [2], dup) == 1.0
    # two objects -> 0.25 each; renaming quirk: "cat" matches the label "wild cat"
    dets = [det("wild cat", 0.9, box(0)), det("dog", 0.9, box(100))]
    assert cb.numeracy_image_score(["cat", "dog"], [1, 2], dets) == pytest.approx(0.75)
    assert cb.numeracy_image_score(["ship"], [1], [det("boat", 0.9, box(0))]) == 1.0
    assert cb.numeracy_query_labels(["boy", "girl", "ship"]) == ["person", "boat"]


def test_numeracy_full_marks_iff_counts_match():
    rng = random.Random(3)
    names = ["cat", "dog", "cup"]
    for _ in range(500):
        objects = rng.sample(names, rng.randint(1, 3))
        counts = [rng.randint(1, 4) for _ in objects]
        dets = []
        for name in names:
            for k in range(rng.randint(0, 4)):  # disjoint boxes: nothing merges
                dets.append(det(name, 0.9, (100 * k, 100 * names.index(name), 100 * k + 50, 100 * names.index(name) + 50)))
        score = cb.numeracy_image_score(objects, counts, dets)
        assert 0.0 <= score <= 1.0
        match = all(sum(d.label == o for d in dets) == c for o, c in zip(objects, counts))
        assert (score == pytest.approx(1.0)) == match


# ------------------------------------------------------------------ 3-in-1


def test_three_in_one():
    assert cb.three_in_one("spatial", 0.6, 0.8, 0.3) == pytest.approx(0.7)
    assert cb.three_in_one("action", 0.6, 0.8, 0.3) == pytest.approx(0.45)
    assert cb.three_in_one("spatialaction", 0.6, 0.9, 0.3) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown complex group"):
        cb.three_in_one("other", 0, 0, 0)
    spatial, action = ["The red hat was on top of the coat.\n"], ["A man rides a bike. Fast\n"]
    assert cb.complex_group("the red hat was on top of the coat.", spatial, action) == "spatial"
    assert cb.complex_group("A man rides a bike. Slowly", spatial, action) == "action"
    assert cb.complex_group("Something else", spatial, action) == "spatialaction"


def test_complex_groups_of_the_val_file():
    read = lambda name: (PROMPTS / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    spatial, action = read("complex_val_spatial.txt"), read("complex_val_action.txt")
    groups = [cb.complex_group(p.strip(), spatial, action) for p in read("complex_val.txt") if p.strip()]
    assert (groups.count("spatial"), groups.count("action"), groups.count("spatialaction")) == (58, 212, 30)


# ------------------------------------------------------------------ detector frame


def test_detector_frame():
    assert cb.detector_frame_size(512, 512) == (479, 479)
    assert cb.detector_frame_size(1024, 768) == (480, 360)
    assert cb.detector_frame_size(768, 1024) == (360, 480)
    import torchvision.transforms as T

    for size in [(512, 512), (1024, 576), (300, 1000)]:  # same pixels as the original transform
        image = random_image(6, size)
        expected = T.Resize(size=479, max_size=480)(image)
        assert cb.to_detector_frame(image).size == expected.size == cb.detector_frame_size(*size)
        assert np.array_equal(np.asarray(cb.to_detector_frame(image)), np.asarray(expected))


# ------------------------------------------------------------------ frozen parses


@pytest.mark.parametrize("val_file", VAL_FILES)
def test_frozen_parse_covers_every_prompt(val_file, table):
    parses = cb.load_prompt_parses(val_file)
    lines = (PROMPTS / val_file).read_text(encoding="utf-8").splitlines()
    prompts = [line.split("\t")[0].strip() for line in lines if line.strip()]
    assert set(prompts) <= set(parses), f"{val_file}: prompts missing from the frozen parse"
    for prompt in prompts:  # the frozen extractions are what the rules compute from the frozen tokens
        p = parses[prompt]
        assert cb.span_text(p.tokens, 0, len(p.tokens)) == prompt
        assert list(p.blip_questions) == cb.blip_questions(p.noun_chunks)
        assert p.objects_2d == cb.first_last_nouns(p.tokens)
        assert list(p.objects_complex) == cb.complex_objects(p.tokens)
        assert p.text_without_adj == cb.text_without_adjectives(p.tokens)
    if val_file == "numeracy_val.txt":
        for prompt in prompts:
            p = parses[prompt]
            assert p.numeracy_objects and len(p.numeracy_objects) == len(p.numeracy_counts)
            assert cb.numeracy_targets([t.text for t in p.tokens], table) == (list(p.numeracy_objects), list(p.numeracy_counts))


def test_frozen_parse_manifest_and_errors():
    manifest = json.loads((cb.PARSE_DIR / "manifest.json").read_text())
    assert manifest["parse_version"] == cb.PARSE_VERSION
    assert set(manifest["outputs"]) == {cb.parse_file_path(f, Path(".")).as_posix() for f in VAL_FILES}
    with pytest.raises(FileNotFoundError, match="freeze_compbench_parse"):
        cb.load_prompt_parses("no_such_val.txt")
    for name, output in manifest["outputs"].items():  # the shipped parses are the ones the manifest records
        assert sha256_file(cb.PARSE_DIR / name) == output["sha256"], name
    with pytest.raises(KeyError, match="not in the frozen parse"):
        cb.lookup_parse(cb.load_prompt_parses("spatial_val.txt"), "an unknown prompt", "spatial_val.txt")


def test_an_edited_parse_is_refused_and_changes_the_scorers_parse_fingerprint(tmp_path, monkeypatch):
    # a parse regenerated with another spaCy asks other questions under the same file name: the manifest's hash
    # catches an edit, and the scorers record a fingerprint of the parses so the gate never mixes the two
    import shutil

    from evals.metrics import compbench_scorers as cs

    parse_dir = tmp_path / "parse"
    shutil.copytree(cb.PARSE_DIR, parse_dir)
    assert cb.load_prompt_parses("spatial_val.txt", parse_dir)
    edited = parse_dir / "spatial_val.v1.jsonl"
    edited.write_text(edited.read_text().replace('"NOUN"', '"PROPN"', 1))
    with pytest.raises(ValueError, match="differs from the sha256 recorded in .*manifest.json"):
        cb.load_prompt_parses("spatial_val.txt", parse_dir)
    shipped = cs.parse_meta(["spatial_val.txt"])
    assert shipped == {"val_files": ["spatial_val.txt"], "parse_fingerprint": shipped["parse_fingerprint"]}
    assert len(shipped["parse_fingerprint"]) == 16 and cs.parse_meta(["color_val.txt"]) != shipped
    original = cb.parse_file_path
    monkeypatch.setattr(cb, "parse_file_path", lambda f, d=parse_dir: original(f, d))
    assert cs.parse_meta(["spatial_val.txt"])["parse_fingerprint"] != shipped["parse_fingerprint"]


def test_missing_weights_error_names_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def loader(source, **kwargs):
        raise OSError("not cached")

    with pytest.raises(cb.MissingWeightsError, match="Salesforce/blip-vqa-capfilt-large.*huggingface-cli download"):
        cb.load_pretrained(loader, "Salesforce/blip-vqa-capfilt-large", "BLIP-VQA")


# ------------------------------------------------------------------ model adapters on tiny random models


def random_image(seed, size=(96, 72)):
    return Image.fromarray((np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "a", "green", "bench", "red", "car", "?",
             "the", "dog", "[DEC]", "[ENC]"]
    path = tmp_path_factory.mktemp("blip") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    text = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                encoder_hidden_size=32, bos_token_id=vocab.index("[DEC]"), pad_token_id=0, sep_token_id=3,
                max_position_embeddings=64)
    vision = dict(hidden_size=32, image_size=64, patch_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=37)
    torch.manual_seed(0)
    model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision))
    from evals.metrics.blip_vqa import BlipVqa

    return BlipVqa(model, BertTokenizer(str(path)), BlipImageProcessor(), batch_size=2)


def test_blip_vqa_adapter(tiny_blip):
    assert (tiny_blip.yes_id, tiny_blip.no_id, tiny_blip.enc_id, tiny_blip.dec_id) == (5, 6, 16, 15)
    images = [random_image(0), random_image(1), random_image(2)]
    questions = [["a green bench?", "the red car?"], [], ["A dog?", "a car?", "the bench?"]]
    probs = tiny_blip.question_probabilities(images, questions)
    assert [len(p) for p in probs] == [2, 0, 3] and all(0 < p < 1 for ps in probs for p in ps)
    # batching and padding do not change a question's probability
    alone = tiny_blip.question_probabilities(images[2:], [["a car?"]])[0][0]
    assert alone == pytest.approx(probs[2][1], abs=1e-5)
    scores = tiny_blip.image_scores(images, questions)
    assert scores[1] == 1.0 and scores[0] == cb.blip_vqa_image_score(probs[0])
    assert tiny_blip.image_scores(images, questions, np_num=1)[2] == cb.format4(probs[2][0])


@torch.no_grad()
def test_blip_vqa_first_position_matches_manual_softmax(tiny_blip):
    model, image = tiny_blip.model, random_image(3)
    pix = tiny_blip.pixel_values([image])
    import torchvision.transforms as T

    original = T.Compose([  # BLIPvqa_eval/data/__init__.py transform_test
        T.Resize((480, 480), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
        T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])
    assert torch.allclose(pix[0], original(image), atol=1e-5)
    embeds = model.vision_model(pixel_values=pix, interpolate_pos_encoding=True).last_hidden_state
    ids = torch.tensor([[16, 7, 14, 12, 3]])  # [ENC] a dog ? [SEP]
    q = model.text_encoder(input_ids=ids, encoder_hidden_states=embeds).last_hidden_state
    logits = model.text_decoder(input_ids=torch.tensor([[15]]), encoder_hidden_states=q).logits[0, 0]
    p = torch.softmax(logits, -1)
    expected = float(p[5] / (p[5] + p[6]))
    assert tiny_blip.yes_probabilities(embeds, ["A dog?"]).item() == pytest.approx(expected, abs=1e-6)


def test_owlv2_adapter(tmp_path):
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    from evals.metrics.detectors import Owlv2Detector

    letters = [chr(c) for c in range(97, 123)]
    vocab = {"!": 0, **{c: i + 1 for i, c in enumerate(letters)}, **{c + "</w>": i + 27 for i, c in enumerate(letters)}}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})  # query mask needs bos > 0
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    n = len(vocab)
    config = Owlv2Config(
        text_config=dict(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                         max_position_embeddings=16, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1),
        vision_config=dict(hidden_size=32, image_size=64, patch_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=37),
        projection_dim=32,  # must equal the text hidden size
    )
    torch.manual_seed(0)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer)
    detector = Owlv2Detector(Owlv2ForObjectDetection(config), processor, threshold=0.0, nms_iou=None)
    frame = cb.to_detector_frame(random_image(4, size=(640, 480)))
    dets = detector.detect(frame, ["dog", "cat"])
    assert len(dets) == 16  # (64/16)^2 patches, one box each
    assert all(d.label in ("dog", "cat") and 0 <= d.score <= 1 for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    w, h = frame.size
    assert all(0 <= d.box_xyxy[0] <= d.box_xyxy[2] <= w and 0 <= d.box_xyxy[1] <= d.box_xyxy[3] <= h for d in dets)
    assert detector.detect(frame, []) == []
    # the detections feed the rules directly
    s = cb.spatial_2d_image_score("dog", "cat", "near", dets)
    assert s == 0.0 or 0.5 <= s <= 1.0
    assert 0 <= cb.numeracy_image_score(["dog"], [2], dets) <= 1


def test_nms_per_label():
    from evals.metrics.detectors import nms_per_label

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float)
    kept = nms_per_label(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 1, 0]), boxes, 0.5)
    assert kept == [0, 2, 3]


def test_unidet_adapter_explains_missing_dependency(tmp_path):
    from evals.metrics.detectors import UniDetDetector

    import importlib.util

    if importlib.util.find_spec("detectron2") is None:  # as here: the error gives the pinned install and the fallback
        with pytest.raises(ImportError, match=r"pip install .*detectron2\.git@5aeb252b.*Owlv2Detector"):
            UniDetDetector(tmp_path, backbone="R50")
    else:
        with pytest.raises(FileNotFoundError, match="UniDet"):
            UniDetDetector(tmp_path, backbone="R50")
    with pytest.raises(ValueError, match="backbone"):
        UniDetDetector(tmp_path, backbone="R101")


def test_dpt_depth_adapter():
    from transformers import DPTConfig, DPTForDepthEstimation

    from evals.metrics.depth import DptDepth

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, image_size=32,
                       patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                       fusion_hidden_size=16, head_hidden_size=8)
    torch.manual_seed(0)
    depth = DptDepth(DPTForDepthEstimation(config).eval())
    image = random_image(5, size=(640, 480))
    import torchvision.transforms as T

    original = T.Compose([T.Resize([480, 480]), T.ToTensor(), T.Normalize(mean=0.5, std=0.5)])  # model_bank_3d.py
    assert torch.allclose(depth.pixel_values(image)[0], original(image), atol=1e-6)
    full = depth.normalized_depth(image)
    assert full.shape == (480, 640) and 0 <= full.min() < 0.1 and 0.9 < full.max() <= 1  # min-max, then resized
    frame = depth.depth_in_detector_frame(image)
    assert frame.shape == (360, 480) and frame.dtype == np.float32 and 0 <= frame.min() <= frame.max() <= 1
    assert np.allclose(frame * 255, np.round(frame * 255), atol=1e-4)  # 8-bit levels, as the PNG round trip
    dets = [det("dog", 0.9, (0, 0, 200, 200)), det("cat", 0.9, (100, 100, 300, 300))]
    assert 0 <= cb.spatial_3d_image_score("dog", "cat", "behind", dets, frame) <= 1
