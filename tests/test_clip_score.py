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
    """The prefix goes before each caption, once; the ×100 variant (Fig. 20's ViT-L/14) is 100 × the cosine."""
    def scorer(variant="tiny", **kwargs):
        return load_clip(variant, tiny_clip["weights"], model_name=tiny_clip["model_name"],
                         config_dir=tiny_clip["config_dir"], **kwargs)

    base, images, captions = scorer(), _images(2), ["a cat", "a very long caption " * 30]
    plain, prefixed = base.score(images, captions), scorer(prefix=PHOTO_PREFIX).score(images, captions)
    assert not np.allclose(prefixed, plain)
    assert np.allclose(prefixed, base.score(images, [PHOTO_PREFIX + c for c in captions]), rtol=1e-6, atol=1e-7)
    assert np.allclose(scorer("clip_vitl14_x100").score(images, captions), 100 * plain, rtol=1e-5)
    assert scorer("clip_vitb32_cosine").score(images, captions) == pytest.approx(plain)
    assert base.n_truncated == 2 and "exceed 77 CLIP tokens" in caplog.text  # counted over both calls


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match="timm/vit_base_patch32_clip_224.openai"):
        load_clip("clip_vitb32_cosine", str(tmp_path / "absent.bin"))
    with pytest.raises(ValueError, match="unknown CLIP-score variant"):
        load_clip("clip_vitb16", None)


def test_clip_fid_features_equal_clean_fids_clip_vit_b_32_path(tmp_path, monkeypatch):
    """CLIP-FID's features = clean-fid's `model_name="clip_vit_b_32"` path (img_preprocess_clip, then CLIP_fx) on the
    same tower. clean-fid needs OpenAI's `clip` package only to load ViT-B/32, so a stand-in module lets its own
    preprocessing and CLIP_fx.__call__ run on a small 224-px open_clip tower."""
    import json
    import sys
    import types

    import open_clip

    from evals.metrics.clip_score import clip_feature_extractor
    from evals.metrics.features import extract_features

    monkeypatch.setitem(sys.modules, "clip", types.ModuleType("clip"))
    from cleanfid.clip_features import CLIP_fx, img_preprocess_clip
    from cleanfid.fid import get_folder_features

    config = {"embed_dim": 16, "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "patch_size": 32,
                                              "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
    (tmp_path / "clip-224-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(tmp_path))
    torch.manual_seed(0)
    torch.save(open_clip.create_model("clip-224-test", pretrained=None).state_dict(), tmp_path / "w.bin")
    scorer = load_clip("custom", str(tmp_path / "w.bin"), model_name="clip-224-test", config_dir=str(tmp_path))
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(256, 256), (300, 200), (64, 64), (512, 384), (224, 224)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    fx = object.__new__(CLIP_fx)
    fx.model = scorer.model
    theirs = get_folder_features(str(folder), model=fx, num_workers=0, batch_size=2, device=torch.device("cpu"),
                                 mode="clean", custom_fn_resize=img_preprocess_clip, verbose=False)
    ours = extract_features(folder, clip_feature_extractor(scorer, "clip:test"), batch_size=3).features
    assert ours.shape == (5, 16)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_clip_fid_extractor_runs_on_the_scorers_device(tiny_clip, monkeypatch):
    """The tower's normalisation constants follow the scorer to its device: on a GPU they stayed on the CPU
    and CLIP-FID's reference statistics failed ("cuda:0 and cpu"). "meta" stands in for the GPU here."""
    import dataclasses

    from evals.metrics import features
    from evals.metrics.clip_score import clip_feature_extractor

    monkeypatch.setattr(features, "fingerprint_state", lambda state: "meta tensors hold no bytes")
    scorer = load_clip("tiny", tiny_clip["weights"], model_name=tiny_clip["model_name"],
                       config_dir=tiny_clip["config_dir"])
    scorer = dataclasses.replace(scorer, model=scorer.model.to("meta"), device=torch.device("meta"))
    extractor = clip_feature_extractor(scorer, "clip:tiny")
    assert {t.device.type for t in (*extractor.model.parameters(), *extractor.model.buffers())} == {"meta"}
