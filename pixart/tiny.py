"""Tiny PixArt/VAE/T5 components built from configs, for tests and the embedded demo (no downloads).

`python -m pixart.tiny --out DIR [--seed S]` writes:
  DIR/pipeline/        a diffusers PixArtAlphaPipeline folder (transformer, vae, text_encoder, tokenizer, scheduler)
  DIR/original.pth     the same transformer in the original PixArt layout, with a `y_embedding` null buffer
The weights are random (seeded): a later stage of the demo replaces them with trained ones.
"""
import argparse
import json
from pathlib import Path

import torch

TINY_TRANSFORMER = dict(
    sample_size=16, num_layers=2, num_attention_heads=2, attention_head_dim=16, in_channels=4,
    out_channels=8, patch_size=2, caption_channels=32, cross_attention_dim=32, norm_type="ada_norm_single",
    use_additional_conditions=False, interpolation_scale=1, norm_elementwise_affine=False, norm_eps=1e-6,
    activation_fn="gelu-approximate", num_embeds_ada_norm=1000, attention_bias=True,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
    block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3, sample_size=64, scaling_factor=0.18215,
)
TINY_T5 = dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu",
               is_encoder_decoder=False, use_cache=False)
MAX_TOKENS = 120


def build_transformer(seed: int = 0, **overrides):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(**{**TINY_TRANSFORMER, **overrides})
    # diffusers zero-initialises nothing we rely on, but random non-zero tables make tests sensitive
    # to every weight (a zero scale_shift_table would hide a mapping error).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "scale_shift_table" in name:
                p.normal_(0, 0.1)
    return model.eval()


def build_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_VAE).eval()


def build_text_encoder(seed: int = 0):
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return ByT5Tokenizer(), T5EncoderModel(T5Config(**TINY_T5)).eval()


def null_embedding(seed: int, channels: int) -> torch.Tensor:
    """A fixed random null caption like the original `y_embedder.y_embedding` (randn / sqrt(channels))."""
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(MAX_TOKENS, channels, generator=gen) / channels**0.5


def save_tiny(out: Path, seed: int = 0) -> dict:
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

    from pixart.keymap import diffusers_to_original
    from pixart.samplers import SCHEDULER_BASE

    out.mkdir(parents=True, exist_ok=True)
    transformer = build_transformer(seed)
    tokenizer, text_encoder = build_text_encoder(seed)
    pipe = PixArtAlphaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=build_vae(seed), transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER_BASE),
    )
    pipe.save_pretrained(out / "pipeline")
    buffers = {"y_embedder.y_embedding": null_embedding(seed, TINY_TRANSFORMER["caption_channels"]),
               "pos_embed": transformer.pos_embed.pos_embed.clone()}
    original = diffusers_to_original(transformer.state_dict(), buffers)
    torch.save({"state_dict": original, "state_dict_ema": original}, out / "original.pth")
    (out / "transformer_config.json").write_text(json.dumps(dict(transformer.config), indent=1, default=list))
    return {"pipeline": str(out / "pipeline"), "original": str(out / "original.pth")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = save_tiny(args.out, args.seed)
    print(f"tiny models written: {paths}")


if __name__ == "__main__":
    main()
