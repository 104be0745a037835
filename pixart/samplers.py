"""Sampler specs (`dpm-solver:20`, `sa-solver:25`, `iddpm:100`, `ddim:50`) → diffusers schedulers.

Every scheduler shares PixArt-α's training schedule (linear betas 1e-4→0.02, 1000 steps, eps prediction;
reference/pixart.md §3–4). Defaults follow the original repo: DPM-Solver++ order 2 multistep 20 steps,
SA-Solver 25 steps (predictor/corrector order 2, tau 1 for 200≤t≤800, diffusers' default tau function),
IDDPM 100 respaced ancestral steps with the learned-range variance, DDIM (eta 0). None clips its x0 estimate:
diffusers' DDPM and DDIM schedulers clip it to [−1, 1] by default, which suits pixels, not latents (scaled
VAE latents reach ±4; PixArt's IDDPM loop passes clip_denoised=False).
"""
from dataclasses import dataclass, field

SCHEDULER_BASE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                      prediction_type="epsilon")

# name -> (diffusers class name, its options, default steps, uses the learned-variance channels)
SAMPLERS = {
    "dpm-solver": ("DPMSolverMultistepScheduler",
                   dict(algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True), 20, False),
    "sa-solver": ("SASolverScheduler",
                  dict(predictor_order=2, corrector_order=2, algorithm_type="data_prediction"), 25, False),
    # linspace spacing reproduces IDDPM's space_timesteps(1000, "100") exactly (0 … 999).
    "iddpm": ("DDPMScheduler", dict(variance_type="learned_range", timestep_spacing="linspace", clip_sample=False),
              100, True),
    "ddim": ("DDIMScheduler", dict(clip_sample=False), 50, False),
}


class SamplerError(ValueError):
    pass


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    steps: int
    options: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """Folder-safe label stating every sampling parameter of the spec."""
        return f"{self.name}-{self.steps}"

    @property
    def uses_learned_variance(self) -> bool:
        return SAMPLERS[self.name][3]

    def scheduler_config(self) -> dict:
        cls, opts, _, _ = SAMPLERS[self.name]
        return {"_class_name": cls, **SCHEDULER_BASE, **opts, **self.options}

    def build(self):
        import diffusers

        config = self.scheduler_config()
        cls = getattr(diffusers, config.pop("_class_name"))
        return cls(**config)


def parse_sampler(text: str) -> SamplerSpec:
    """`name[:steps]`; the name must be one of SAMPLERS, steps ≥ 2 (diffusers crashes on 1)."""
    name, _, steps = str(text).partition(":")
    if name not in SAMPLERS:
        raise SamplerError(f"unknown sampler {name!r} in {text!r}; known: {', '.join(SAMPLERS)}")
    try:
        n = int(steps) if steps else SAMPLERS[name][2]
    except ValueError:
        raise SamplerError(f"sampler {text!r}: steps must be an integer, e.g. '{name}:{SAMPLERS[name][2]}'") from None
    if n < 2:
        raise SamplerError(f"sampler {text!r}: at least 2 steps are needed")
    return SamplerSpec(name, n)
