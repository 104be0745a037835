"""FID / KID / FD-DINOv2: parity with clean-fid and torchmetrics on tiny random-weight extractors, the
reference-statistics cache, COCO preprocessing, weight loading and bad input."""
import dataclasses
import os
import zipfile

import numpy as np
import pytest
import torch
from cleanfid import fid as cleanfid
from cleanfid.utils import ResizeDataset
from PIL import Image

from evals.metrics import features as feats_mod
from evals.metrics.features import (BadImagesError, WeightsNotFoundError, as_extractor, extract_features,
                                    list_images, load_dinov2, load_inception, sha256_file)
from evals.metrics.fid import (FDDINOv2, FID, KID, _coco_preprocess_array, _content_digest, _stats_key, coco_preprocess, fid_ci,
                               fid_from_features, gaussian_stats, kid_from_features, reference_stats)

CPU = torch.device("cpu")


class TinyNet(torch.nn.Module):
    """Random-weight stand-in for Inception: [0, 255] images -> 16 features."""
    num_features = 16

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(  # tanh, not ReLU: dead units would make the covariance singular
            torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.Tanh(),
            torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x):
        return 10 * self.body(x / 128 - 1)


def _procedural_images(folder, n, seed, brightness):
    """Non-square PNGs with gradients and blocks, so features vary from image to image."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = rng.integers(48, 96, size=2)
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        img = brightness * rng.uniform(0.3, 1, size=3) * (0.5 + 0.5 * np.sin(rng.uniform(1, 12) * (xx + yy)))[..., None]
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[top:top + h // 3, left:left + w // 3] = rng.uniform(0, 255, size=3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return _procedural_images(root / "ref", 30, seed=0, brightness=200), \
        _procedural_images(root / "gen", 26, seed=1, brightness=240)


@pytest.fixture(scope="module")
def net():
    return TinyNet().eval()


@pytest.fixture(scope="module")
def computed(folders, net, tmp_path_factory):
    """Clean-mode COCO-preprocessed reference statistics (with features) and generated features, computed once."""
    ref_dir, gen_dir = folders
    extractor = as_extractor(net, name="tiny")
    cache_dir = tmp_path_factory.mktemp("refstats")
    ref = reference_stats(ref_dir, extractor, cache_dir=cache_dir, keep_features=True)
    gen = extract_features(gen_dir, extractor, transform=_coco_preprocess_array).features
    return dict(extractor=extractor, ref=ref, gen=gen, cache_dir=cache_dir)


def test_reference_stats_run_where_the_extractor_was_loaded(folders, net, tmp_path, monkeypatch):
    """The scorer loads its extractor on its device (a GPU); reference statistics must not move it to the CPU."""
    extractor = as_extractor(net, name="tiny")
    moved = []
    monkeypatch.setattr(type(extractor), "to", lambda self, device: moved.append(device) or self)
    reference_stats(folders[0], extractor, cache_dir=tmp_path)
    assert moved == []


@pytest.mark.parametrize("mode,preprocess", [("clean", "coco256"), ("clean", "none"),
                                             ("legacy_pytorch", "coco256"), ("legacy_tensorflow", "coco256")])
def test_fid_equals_clean_fid_compute_fid(folders, net, tmp_path, mode, preprocess):
    ref_dir, gen_dir = folders
    extractor = as_extractor(net, mode=mode, name="tiny")
    transform = _coco_preprocess_array if preprocess == "coco256" else None
    ref = reference_stats(ref_dir, extractor, preprocess=preprocess, cache_dir=tmp_path)
    ours = fid_from_features(extract_features(gen_dir, extractor, transform=transform).features, ref)
    theirs = cleanfid.compute_fid(str(ref_dir), str(gen_dir), mode=mode, custom_feat_extractor=net, num_workers=0,
                                  device=CPU, verbose=False, custom_image_tranform=transform)
    assert ours > 1e-3
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_fid_equals_torchmetrics_on_the_same_inputs(folders, net, computed):
    from torchmetrics.image.fid import FrechetInceptionDistance

    ref_dir, gen_dir = folders
    # torchmetrics passes a custom module's input through untouched: feed it clean-fid's resized [0, 255] floats.
    tm = FrechetInceptionDistance(feature=net).double()
    for folder, real in ((ref_dir, True), (gen_dir, False)):
        data = ResizeDataset(sorted(map(str, folder.glob("*.png"))), mode="clean")
        data.custom_image_tranform = _coco_preprocess_array
        tm.update(torch.stack([data[i] for i in range(len(data))]), real=real)
    assert fid_from_features(computed["gen"], computed["ref"]) == pytest.approx(float(tm.compute()), rel=1e-6)


def test_kid_equals_clean_fid_kernel_distance(folders, computed):
    _, gen_dir = folders
    ref, gen = computed["ref"], computed["gen"].astype(np.float64)
    np.random.seed(3)
    theirs = cleanfid.kernel_distance(ref["features"].astype(np.float64), gen)
    assert kid_from_features(gen, ref["features"], seed=3) == pytest.approx(theirs, rel=1e-9)

    kid = KID(computed["extractor"], ref, seed=3)
    kid.update_files(gen_dir)
    assert kid.name == "kid_clean_tiny_256" and kid.higher_is_better is False
    assert kid.compute() == pytest.approx(theirs, rel=1e-6)


def test_reference_stats_cache_is_reused_without_the_extractor(folders, computed):
    ref_dir, _ = folders
    extractor, first, cache_dir = computed["extractor"], computed["ref"], computed["cache_dir"]
    assert (cache_dir / f"{first['key']}.npz").is_file() and first["n"] == 30

    class Untouchable(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the cache hit ran the extractor")

    again = reference_stats(ref_dir, dataclasses.replace(extractor, model=Untouchable()), cache_dir=cache_dir)
    assert again["key"] == first["key"] and again["n"] == 30
    np.testing.assert_array_equal(again["sigma"], first["sigma"])
    np.testing.assert_array_equal(again["features"], first["features"])
    assert again["extractor"] == "tiny" and again["mode"] == "clean" and again["preprocessing"] == "coco256"

    images = list_images(ref_dir)
    content = _content_digest(images, cache_dir)
    fewer = _content_digest(list_images(sorted(ref_dir.glob("*"))[1:]), cache_dir)
    other_keys = {_stats_key(content, extractor, "none"), _stats_key(fewer, extractor, "coco256"),
                  _stats_key(content, dataclasses.replace(extractor, fingerprint="x"), "coco256")}
    assert first["key"] not in other_keys and len(other_keys) == 3


def test_the_reference_key_follows_content_and_a_damaged_cache_is_computed_again(folders, net, tmp_path):
    """The key was names and byte sizes: a reference re-rendered to the same names and sizes reused the old
    statistics. A byte-identical copy keeps the key (regress compares reference keys). A cache file another job
    left damaged was fatal for every later job."""
    import shutil

    rng = np.random.default_rng(0)
    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(20):  # BMP: the file size depends on the resolution only
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(ref / f"{i}.bmp")
    extractor = as_extractor(net, name="tiny")
    first = reference_stats(ref, extractor, cache_dir=tmp_path / "cache")
    copy = tmp_path / "copy"
    shutil.copytree(ref, copy, copy_function=shutil.copyfile)  # new modification times, same bytes
    assert reference_stats(copy, extractor, cache_dir=tmp_path / "cache")["key"] == first["key"]
    size = (ref / "0.bmp").stat().st_size
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(ref / "0.bmp")  # re-rendered
    assert (ref / "0.bmp").stat().st_size == size
    rerendered = reference_stats(ref, extractor, cache_dir=tmp_path / "cache")
    assert rerendered["key"] != first["key"]
    cache = tmp_path / "cache" / f"{first['key']}.npz"
    cache.write_bytes(cache.read_bytes()[:100])  # damaged
    again = reference_stats(copy, extractor, cache_dir=tmp_path / "cache")
    assert again["key"] == first["key"] and again["n"] == first["n"]
    np.testing.assert_allclose(again["mu"], first["mu"])
    assert not list((tmp_path / "cache").rglob("*.tmp*"))


def test_zip_of_images_gives_the_folder_statistics(folders, net, tmp_path):
    ref_dir, _ = folders
    archive = tmp_path / "ref.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for png in sorted(ref_dir.glob("*.png")):
            zf.write(png, f"images/{png.name}")
    extractor = as_extractor(net, name="tiny")
    from_zip = reference_stats(archive, extractor, cache_dir=tmp_path / "a")
    from_folder = reference_stats(ref_dir, extractor, cache_dir=tmp_path / "b")
    assert from_zip["n"] == 30
    np.testing.assert_allclose(from_zip["mu"], from_folder["mu"], rtol=1e-6)
    np.testing.assert_allclose(from_zip["sigma"], from_folder["sigma"], rtol=1e-6, atol=1e-12)


def test_in_memory_update_matches_files(folders, computed):
    _, gen_dir = folders
    extractor, ref = computed["extractor"], computed["ref"]
    in_memory = FID(extractor, ref, batch_size=7)
    in_memory.update([Image.open(p) for p in sorted(gen_dir.glob("*.png"))])
    np.testing.assert_allclose(in_memory.features, computed["gen"], rtol=1e-6)
    assert in_memory.compute() == pytest.approx(fid_from_features(computed["gen"], ref), rel=1e-6)
    assert in_memory.name == "fid_clean_tiny_256" and in_memory.higher_is_better is False
    with pytest.raises(ValueError, match="preprocessing"):
        FID(extractor, ref, preprocess="none")


def test_fid_ci_over_generated_images(computed):
    gen, ref = computed["gen"], computed["ref"]
    ci = fid_ci(gen, ref, n_resamples=50, seed=0)
    assert ci.value == pytest.approx(fid_from_features(gen, ref), rel=1e-6)
    assert ci.low < ci.high and ci.n == 26 and ci.n_resamples == 50
    assert fid_ci(gen, ref, n_resamples=50, seed=0) == ci


def test_bias_corrected_fid_interval_never_goes_below_zero():
    # generated features from the reference's own Gaussian: FID 0.030, and the bootstrap bias (0.029: resamples
    # repeat images) shifted the lower end to -0.004
    gen = np.random.default_rng(0).normal(size=(300, 4))
    ref = {"mu": np.zeros(4), "sigma": np.eye(4)}
    ci = fid_ci(gen, ref, n_resamples=200, seed=0, bias_corrected=True)
    assert ci.low == 0.0 and 0 < ci.value < ci.high


def test_coco_preprocess_is_a_centred_square_at_256():
    img = np.zeros((200, 300, 3), np.uint8)
    img[:, :50] = img[:, 250:] = (255, 0, 0)  # margins the centre crop must remove
    img[:, 50:250] = (0, 0, 255)
    out = coco_preprocess(Image.fromarray(img))
    assert out.size == (256, 256)
    assert np.all(np.asarray(out) == (0, 0, 255))
    tall = coco_preprocess(Image.fromarray(np.zeros((301, 120, 3), np.uint8)))
    assert tall.size == (256, 256)


def test_too_few_images_for_the_feature_dimension_are_refused():
    with pytest.raises(ValueError, match="use at least 17 images"):
        gaussian_stats(np.random.default_rng(0).normal(size=(16, 16)))


def test_corrupt_and_truncated_images_are_named_and_counted(folders, net, tmp_path):
    ref_dir, _ = folders
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    for png in sorted(ref_dir.glob("*.png"))[:20]:
        (bad_dir / png.name).write_bytes(png.read_bytes())
    data = (bad_dir / "000.png").read_bytes()
    (bad_dir / "000.png").write_bytes(data[: len(data) // 2])  # truncated
    (bad_dir / "zzz.png").write_bytes(b"not an image")
    extractor = as_extractor(net, name="tiny")
    with pytest.raises(BadImagesError, match=r"2 of 21 images") as err:
        extract_features(bad_dir, extractor)
    assert "000.png" in str(err.value) and "zzz.png" in str(err.value)
    stats = reference_stats(bad_dir, extractor, cache_dir=tmp_path, on_error="skip")
    assert stats["n"] == 19 and sorted(p.rsplit("/", 1)[-1] for p in stats["bad_files"]) == ["000.png", "zzz.png"]


def test_missing_inception_error_names_the_file_and_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(feats_mod, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(feats_mod, "CLEANFID_DOWNLOAD_DIR", tmp_path / "tmp")
    with pytest.raises(WeightsNotFoundError, match="inception-2015-12-05.pt") as err:
        load_inception()
    assert "nvlabs-fi-cdn.nvidia.com" in str(err.value) and "weights.inception" in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        load_inception(tmp_path, mode="legacy_pytorch")


class _FakeInceptionLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.proj = torch.nn.Conv2d(3, 2048, 4)

    def forward(self, x):
        return self.proj(self.pool(x))


class _FakeInception(torch.nn.Module):
    """Same torchscript interface as clean-fid's inception-2015-12-05.pt (`layers`, `return_features`)."""

    def __init__(self):
        super().__init__()
        self.layers = _FakeInceptionLayers()

    def forward(self, x, return_features: bool = False):
        return self.layers(x / 128 - 1)


def test_local_inception_torchscript_loads_through_clean_fid(tmp_path):
    torch.manual_seed(0)
    torch.jit.script(_FakeInception()).save(str(tmp_path / "inception-2015-12-05.pt"))
    extractor = load_inception(tmp_path)
    assert (extractor.name, extractor.dim, extractor.mode) == ("inception", 2048, "clean")
    assert extractor.fingerprint == sha256_file(tmp_path / "inception-2015-12-05.pt")
    assert extractor(torch.full((2, 3, 299, 299), 100.0)).shape == (2, 2048)
    legacy_tf = load_inception(tmp_path / "inception-2015-12-05.pt", mode="legacy_tensorflow")
    assert legacy_tf(torch.full((1, 3, 256, 256), 100.0)).shape == (1, 2048)


def test_dinov2_loader_on_a_tiny_local_vit(folders, tmp_path):
    import timm
    from safetensors.torch import save_file

    ref_dir, gen_dir = folders
    tiny = dict(embed_dim=24, depth=1, num_heads=2)
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, **tiny)  # 518 px grid, as released
    save_file(vit.state_dict(), tmp_path / "tiny_dinov2.safetensors")

    extractor = load_dinov2(tmp_path / "tiny_dinov2.safetensors", arch="vit_small_patch14_dinov2.lvd142m",
                            name="tiny_dinov2", **tiny)
    assert (extractor.dim, extractor.mode) == (24, "dinov2")
    net = extractor.model.net
    assert net.pos_embed.shape == (1, 1 + 16 * 16, 24)  # 37x37 grid resampled to 224/14 = 16
    torch.testing.assert_close(net.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)

    img = np.asarray(Image.open(ref_dir / "001.png").convert("RGB"))
    resized = np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.BICUBIC), np.float32) / 255
    # DINOv2's published ImageNet normalisation, written out: the module's own constants would move with it
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    normalised = ((torch.from_numpy(resized).permute(2, 0, 1) - mean) / std)[None]
    with torch.no_grad():
        expected = net(normalised).numpy()
    got = extract_features([ref_dir / "001.png"], extractor).features
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    ref = reference_stats(ref_dir, extractor, cache_dir=tmp_path)
    metric = FDDINOv2(extractor, ref)
    metric.update_files(gen_dir)
    # the Fréchet distance of the DINOv2 features, both sets preprocessed alike (COCO 256 crop)
    expected = fid_from_features(extract_features(gen_dir, extractor, transform=_coco_preprocess_array).features, ref)
    assert metric.name == "fd_tiny_dinov2_256" and metric.compute() == pytest.approx(expected, rel=1e-6)
    assert expected > 0

    with pytest.raises(WeightsNotFoundError, match="dinov2_vitl14"):
        load_dinov2(tmp_path / "missing.safetensors")


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchvision on clean-fid's `pretrained=False`

def test_legacy_pytorch_inception_reads_a_local_state_dict(tmp_path):
    from unittest import mock

    from cleanfid import inception_pytorch

    # pytorch-fid's architecture with random weights stands in for pt_inception-2015-12-05-6726825d.pth.
    with mock.patch.object(inception_pytorch, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda *a, **k: None):
        torch.manual_seed(0)
        state = inception_pytorch.fid_inception_v3().state_dict()
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")

    extractor = load_inception(tmp_path, mode="legacy_pytorch")
    assert (extractor.dim, extractor.mode) == (2048, "legacy_pytorch")
    torch.testing.assert_close(extractor.model.net.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    assert extractor(torch.full((1, 3, 80, 80), 100.0)).shape == (1, 2048)  # small input: pooled features all the same


def test_fid_runs_with_a_scipy_whose_sqrtm_takes_no_disp(monkeypatch):
    """SciPy after 1.17 dropped `sqrtm(..., disp=False)`, which clean-fid 0.1.35 calls: the GPU machine's SciPy
    failed every FID cell with TypeError. The adapter gives clean-fid the old call and the same distance."""
    import scipy.linalg

    from evals.metrics.fid import fid_from_stats

    monkeypatch.setattr(cleanfid, "linalg", scipy.linalg)  # clean-fid's own import, restored after the test
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(0.3, 1.2, size=(40, 6))
    stats = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    expected = fid_from_stats(*stats)
    sqrtm = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a: sqrtm(a))  # the new signature
    with pytest.raises(TypeError, match="disp"):
        cleanfid.frechet_distance(*stats)
    assert fid_from_stats(*stats) == pytest.approx(expected, rel=1e-12)
    assert cleanfid.frechet_distance(*stats) == pytest.approx(expected, rel=1e-12)
