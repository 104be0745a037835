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
# `local_text_attention`: a random T5 attends almost uniformly (its random position bias and q.k are small), so a
# byte's state is its own embedding plus the sentence mean: nothing ties "red" to the "circle" after it, and no
# reader can tell "a red circle and a blue square" from "a blue circle and a red square" (a cross-attention probe
# trained on the shapes captions stays at bag-of-words accuracy; docs/status.md, session 9). Pretrained T5 ties
# words to their neighbours; this option gets that from a fixed position bias: head h attends around the byte
# offset LOCAL_HEADS[h][0] (keys left of the query negative) with width LOCAL_HEADS[h][1], over 32 position
# buckets (8 are too coarse for byte offsets). The other weights stay random; the encoder stays frozen.
LOCAL_HEADS = ((0, 2), (-6, 4), (6, 4), (-14, 6))
LOCAL_BIAS_SCALE = 4.0
LOCAL_T5 = {**TINY_T5, "relative_attention_num_buckets": 32}


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


def build_text_encoder(seed: int = 0, local_attention: bool = False):
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    encoder = T5EncoderModel(T5Config(**(LOCAL_T5 if local_attention else TINY_T5))).eval()
    if local_attention:
        _localise_attention(encoder)
    return ByT5Tokenizer(), encoder


def _localise_attention(encoder) -> None:
    """Set the shared relative position bias (first block) to LOCAL_HEADS' Gaussian profiles."""
    from transformers.models.t5.modeling_t5 import T5Attention

    config = encoder.config
    reach = 2 * config.relative_attention_max_distance
    offsets = torch.arange(-reach, reach + 1)
    buckets = T5Attention._relative_position_bucket(offsets, bidirectional=True,
                                                    num_buckets=config.relative_attention_num_buckets,
                                                    max_distance=config.relative_attention_max_distance)
    table = encoder.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    with torch.no_grad():
        for bucket in buckets.unique().tolist():  # bucket num_buckets/2 ("+0") is never looked up
            offset = offsets[buckets == bucket].float().mean()  # a far bucket: its offsets' mean
            for head, (centre, width) in enumerate(LOCAL_HEADS):
                table[bucket, head] = -LOCAL_BIAS_SCALE * ((offset - centre) / width) ** 2


def null_embedding(seed: int, channels: int) -> torch.Tensor:
    """A fixed random null caption like the original `y_embedder.y_embedding` (randn / sqrt(channels))."""
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(MAX_TOKENS, channels, generator=gen) / channels**0.5


def save_tiny(out: Path, seed: int = 0, local_text_attention: bool = False) -> dict:
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

    from pixart.keymap import diffusers_to_original
    from pixart.samplers import SCHEDULER_BASE

    out.mkdir(parents=True, exist_ok=True)
    transformer = build_transformer(seed)
    tokenizer, text_encoder = build_text_encoder(seed, local_text_attention)
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
    parser.add_argument("--local-text-attention", action="store_true",
                        help="T5 heads attend around fixed byte offsets, so word states carry their neighbours "
                             "(needed for attribute binding; see LOCAL_HEADS)")
    args = parser.parse_args(argv)
    paths = save_tiny(args.out, args.seed, args.local_text_attention)
    print(f"tiny models written: {paths}")


if __name__ == "__main__":
    main()
