"""CLIP score: parity with a direct open_clip computation, variants, truncation counting, missing weights."""
import numpy as np
import pytest
import torch
from PIL import Image

from evals.metrics.clip_score import PHOTO_PREFIX, WeightsError, load_clip
from evals.tiny import build_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"), seed=1)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)) for i in range(n)]


def test_equals_direct_open_clip(tiny_clip):
    import open_clip

    scorer = load_clip("tiny", tiny_clip["weights"], model_name=tiny_clip["model_name"],
                       config_dir=tiny_clip["config_dir"])
    images, captions = _images(5), ["a red cube", "a blue ball", "two stars", "a dog", "a striped square"]
    ours = scorer.score(images, captions, batch_size=2)
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_clip["model_name"],
                                                                 pretrained=tiny_clip["weights"])
    tokenizer = open_clip.get_tokenizer(tiny_clip["model_name"])
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(i) for i in images]))
        txt = model.encode_text(tokenizer(captions))
    direct = torch.nn.functional.cosine_similarity(img, txt).numpy()
    assert np.allclose(ours, direct, rtol=1e-5, atol=1e-6)
    assert scorer.higher_is_better and len(scorer.fingerprint) == 16


def test_prefix_scale_and_truncation_count(tiny_clip, caplog):
    base = load_clip("tiny", tiny_clip["weights"], model_name=tiny_clip["model_name"],
                     config_dir=tiny_clip["config_dir"])
    prefixed = load_clip("tiny", tiny_clip["weights"], model_name=tiny_clip["model_name"],
                         config_dir=tiny_clip["config_dir"], prefix=PHOTO_PREFIX)
    images = _images(2)
    long = "a very long caption " * 30
    a = base.score(images, ["a cat", long])
    b = prefixed.score(images, ["a cat", long])
    assert not np.allclose(a, b)
    assert base.n_truncated == 1 and "exceed 77 CLIP tokens" in caplog.text


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match="timm/vit_base_patch32_clip_224.openai"):
        load_clip("clip_vitb32_cosine", str(tmp_path / "absent.bin"))
    with pytest.raises(ValueError, match="unknown CLIP-score variant"):
        load_clip("clip_vitb16", None)
