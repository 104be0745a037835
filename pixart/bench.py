"""Engine benchmark: our generation path vs stock diffusers PixArtAlphaPipeline on the same model and prompts.

python -m pixart.bench --arch tiny|xl-2 [--resolution 256] [--prompts 16] [--batch-size 8] [--loop-prompts 8]
                       [--steps 20] [--repeats 3] [--device auto] [--dtype float32] [--json FILE]

Measures images/s (median of --repeats) and peak memory for:
  (a) stock, per prompt: `pipe(prompt)` in a loop over the first --loop-prompts prompts, the way most users write
      it (T5 runs every call; one image per call, so a few prompts give its rate);
  (b) stock, batched: `pipe(list_of_prompts)` in chunks of --batch-size (the best batched call);
  (c) ours: pixart.engine on cached embeddings (ragged, padded to the batch's longest prompt), PIL out,
      plus the one-off cost of computing the embedding cache, reported apart.
Weights are random (same FLOPs as trained ones). `xl-2` builds PixArt-XL-2, the SD VAE and T5-v1.1-XXL from
their configs, which needs a GPU; `tiny` runs anywhere.
"""
import argparse
import json
import platform
import resource
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from pixart.atomic import write_text_atomic
from pixart.checkpoints import xl2_config
from pixart.embeddings import encode_prompts
from pixart.engine import Engine
from pixart.runtime import device_name, pick_device, torch_dtype
from pixart.samplers import parse_sampler

SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
              block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
              use_cache=False, dropout_rate=0.0)
BENCH_PROMPTS = [
    "a photograph of an astronaut riding a horse", "a red circle to the left of a blue square",
    "a bowl of ramen on a wooden table, steam rising", "an oil painting of a lighthouse in a storm",
    "two cats sleeping on a striped sofa", "a green triangle above a yellow circle",
    "a city street at night with neon signs reflected in puddles", "a close-up of a dotted purple mushroom",
]


def build(arch: str, resolution: int, device, dtype):
    from diffusers import AutoencoderKL, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from pixart import tiny

    torch.manual_seed(0)
    if arch == "tiny":
        transformer, vae = tiny.build_transformer(), tiny.build_vae()
        tokenizer, encoder = tiny.build_text_encoder()
    else:
        with torch.device(device):
            transformer = PixArtTransformer2DModel(**xl2_config(resolution)).to(dtype)
            vae = AutoencoderKL(**SD_VAE).to(dtype)
            encoder = T5EncoderModel(T5Config(**T5_XXL)).to(dtype)
        tokenizer = ByT5Tokenizer()  # T5's sentencepiece file is not shipped; byte tokens give similar lengths
    scheduler = parse_sampler("dpm-solver:20").build()
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer,
                               scheduler=scheduler).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (monotonic)


def timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), peak_memory_mb(device)


def run(args, on_progress=lambda report: None) -> dict:
    device, dtype = pick_device(args.device), torch_dtype(args.dtype)
    pipe = build(args.arch, args.resolution, device, dtype)
    size = args.resolution if args.arch == "xl-2" else pipe.transformer.config.sample_size * pipe.vae_scale_factor
    prompts = [BENCH_PROMPTS[i % len(BENCH_PROMPTS)] + f" #{i}" for i in range(args.prompts)]
    sampler = parse_sampler(f"dpm-solver:{args.steps}")
    pipe.scheduler = sampler.build()
    common = dict(num_inference_steps=args.steps, guidance_scale=4.5, height=size, width=size,
                  clean_caption=False, use_resolution_binning=args.arch == "xl-2")

    def stock_loop():
        for i, p in enumerate(prompts[:args.loop_prompts]):
            pipe(p, generator=torch.Generator().manual_seed(i), **common)

    def stock_batched():
        for s in range(0, len(prompts), args.batch_size):
            chunk = prompts[s:s + args.batch_size]
            pipe(chunk, generator=[torch.Generator().manual_seed(s + i) for i in range(len(chunk))], **common)

    t0 = time.perf_counter()
    table = encode_prompts(prompts, pipe.tokenizer, pipe.text_encoder, clean_caption=False, device=device,
                           progress=False)
    embed_seconds = time.perf_counter() - t0
    engine = Engine(pipe.transformer, pipe.vae, table, device=device, dtype=dtype)

    def ours():
        for s in range(0, len(prompts), args.batch_size):
            chunk = prompts[s:s + args.batch_size]
            engine.decode(engine.denoise(chunk, list(range(s, s + len(chunk))), size, size, sampler, 4.5), size, size)

    report = {
        "date": date.today().isoformat(), "machine": f"{device_name(device)}; {platform.platform()}",
        "arch": args.arch, "resolution": size, "prompts": len(prompts), "batch_size": args.batch_size,
        "loop_prompts": min(args.loop_prompts, len(prompts)), "steps": args.steps, "dtype": args.dtype,
        "embedding_cache_seconds": round(embed_seconds, 3), "images_per_s": {}, "peak_memory_mb": {},
    }
    modes = (("ours", ours, len(prompts)), ("stock_batched", stock_batched, len(prompts)),
             ("stock_per_prompt", stock_loop, report["loop_prompts"]))
    with torch.inference_mode():
        ours()  # warm-up (kernels, allocator)
        for name, fn, n in modes:
            seconds, peak = timed(fn, device, args.repeats)
            report["images_per_s"][name], report["peak_memory_mb"][name] = round(n / seconds, 3), round(peak, 1)
            on_progress(report)  # a run cut short (a time limit) keeps the modes measured so far
    ips = report["images_per_s"]
    report["speedup_vs_stock_batched"] = round(ips["ours"] / ips["stock_batched"], 2)
    report["speedup_vs_stock_per_prompt"] = round(ips["ours"] / ips["stock_per_prompt"], 2)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("tiny", "xl-2"), default="tiny")
    parser.add_argument("--resolution", type=int, default=256, choices=(256, 512, 1024))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--loop-prompts", type=int, default=8, help="prompts for the per-prompt pipe() loop")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    if args.loop_prompts < 1:
        parser.error("--loop-prompts must be at least 1")

    def write(report):  # whole or not at all: `timeout` may stop the run at any moment
        if args.json:
            write_text_atomic(Path(args.json), json.dumps(report, indent=1))

    report = run(args, on_progress=write)
    write(report)
    print(json.dumps(report, indent=1))
    print(f"bench: ours {report['images_per_s']['ours']} images/s = {report['speedup_vs_stock_per_prompt']}× "
          f"per-prompt pipe() loop, {report['speedup_vs_stock_batched']}× batched pipe()")


if __name__ == "__main__":
    main()
