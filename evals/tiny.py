"""Tiny evaluation components for tests and the embedded demo: a small open_clip CLIP, a shapes reference set.

`python -m evals.tiny clip --out DIR` / `shapes --out DIR --n N` / `compbench --out DIR` (BLIP-VQA, OWLv2,
DPT and Mask2Former with random weights, saved as folders that load through the same `from_pretrained` path as real weights).
`build_tiny_clip(out, seed)` writes `{out}/tiny-clip-32.json` (an open_clip model config, registered with
`open_clip.add_model_config(out)`) and `{out}/tiny-clip-32.bin` (random weights), so scorers load it through
the same local-weights path as real CLIP.
"""
import json
from pathlib import Path

import torch

TINY_CLIP_NAME = "tiny-clip-32"
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def build_tiny_clip(out: Path, seed: int = 0) -> dict:
    import open_clip

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = out / f"{TINY_CLIP_NAME}.json"
    config.write_text(json.dumps(TINY_CLIP, indent=1))
    open_clip.add_model_config(str(out))
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    weights = out / f"{TINY_CLIP_NAME}.bin"
    torch.save(model.state_dict(), weights)
    return {"config_dir": str(out), "model_name": TINY_CLIP_NAME, "weights": str(weights)}


TINY_WORDS = ["yes", "no", "a", "an", "the", "and", "of", "on", "to", "left", "right", "top", "bottom", "next",
              "red", "green", "blue", "yellow", "purple", "orange", "circle", "square", "triangle", "?"]


def build_tiny_blip(out: Path, seed: int = 0) -> str:
    """A random BLIP-VQA (BlipForQuestionAnswering + BlipProcessor) with a small BERT vocabulary."""
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS, "[DEC]", "[ENC]"]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    text = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=37, encoder_hidden_size=32, bos_token_id=vocab.index("[DEC]"), pad_token_id=0,
                sep_token_id=3, max_position_embeddings=64)
    vision = dict(hidden_size=32, image_size=64, patch_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=37)
    torch.manual_seed(seed)
    BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision)).save_pretrained(out)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 64, "width": 64}),
                              tokenizer=BertTokenizer(str(out / "vocab.txt")))
    processor.save_pretrained(out)
    return str(out)


def build_tiny_owlv2(out: Path, seed: int = 0) -> str:
    """A random OWLv2 detector with a letter-level CLIP tokenizer (queries padded to 16 tokens)."""
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(97, 123)]
    vocab = {"!": 0, **{c: i + 1 for i, c in enumerate(letters)}, **{c + "</w>": i + 27 for i, c in enumerate(letters)}}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=16)
    n = len(vocab)
    config = Owlv2Config(
        text_config=dict(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=16, bos_token_id=n - 2, eos_token_id=n - 1,
                         pad_token_id=n - 1),
        vision_config=dict(hidden_size=32, image_size=64, patch_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=37),
        projection_dim=32)  # OWLv2 needs projection_dim == text hidden size
    torch.manual_seed(seed)
    Owlv2ForObjectDetection(config).save_pretrained(out)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                   tokenizer=tokenizer).save_pretrained(out)
    return str(out)


def build_tiny_dpt(out: Path, seed: int = 0) -> str:
    """A random DPT depth model (the MiDaS architecture family) from a small config."""
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
    torch.manual_seed(seed)
    DPTForDepthEstimation(config).save_pretrained(out)
    return str(out)


def build_tiny_mask2former(out: Path, seed: int = 0) -> str:
    """A random Mask2Former (Swin backbone) over the 80 COCO classes, for GenEval's detector path."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                               dim_feedforward=64, num_queries=12, num_labels=80)
    torch.manual_seed(seed)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(out)
    return str(out)


SHAPE_COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
                 "purple": (140, 60, 180), "orange": (240, 140, 30)}


def draw_shapes_reference(out: Path, n: int, seed: int = 0, size: int = 64) -> int:
    """A reference image set of simple scenes: 1–3 coloured circles, squares or triangles on white."""
    import random

    from PIL import Image, ImageDraw

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 3)):
            r = rng.randint(size // 10, size // 5)
            cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
            colour = SHAPE_COLOURS[rng.choice(sorted(SHAPE_COLOURS))]
            shape = rng.choice(("circle", "square", "triangle"))
            if shape == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
            elif shape == "square":
                draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        image.save(out / f"ref{i:05d}.png")
    return n


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("clip", "shapes", "compbench"), nargs="?", default="clip")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=64, help="shapes: number of reference images")
    args = parser.parse_args(argv)
    if args.what == "clip":
        print(f"tiny CLIP written: {build_tiny_clip(args.out, args.seed)}")
    elif args.what == "compbench":
        folders = [build(args.out / name, args.seed) for name, build in
                   (("blip", build_tiny_blip), ("owlv2", build_tiny_owlv2), ("dpt", build_tiny_dpt),
                    ("mask2former", build_tiny_mask2former))]
        print(f"tiny CompBench backends written: {folders}")
    else:
        print(f"shapes reference: {draw_shapes_reference(args.out, args.n, args.seed)} images → {args.out}")


if __name__ == "__main__":
    main()
