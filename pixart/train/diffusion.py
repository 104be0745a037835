"""The IDDPM training objective as PixArt-α trains with it (reference §3, `diffusion/model/gaussian_diffusion.py`).

Linear betas 1e-4→0.02 over 1000 steps, eps prediction, LEARNED_RANGE variance, LossType.MSE:
    loss = mean((eps - eps_θ)²) + VB
where VB is KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t)) in bits (the decoder NLL at t = 0), computed from a
detached eps so that only the variance head learns from it. The model outputs 2·C channels: eps, then
v ∈ [-1, 1] interpolating the log-variance between the clipped posterior variance (v = -1) and beta_t (v = 1).

The training loop calls:
    diffusion = GaussianDiffusion()
    t = diffusion.sample_timesteps(batch, generator)
    x_t = diffusion.q_sample(x0, t, noise)
    terms = diffusion.training_losses(model(x_t, t, ...), x0, noise, t, x_t=x_t)   # terms["loss"].mean()
"""
import math

import torch

LOG2 = math.log(2.0)


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """IDDPM's `get_named_beta_schedule("linear", n)`: the 1000-step range rescaled to n steps, float64."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats, elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of Φ that IDDPM uses (kept for parity with its decoder NLL)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales) -> torch.Tensor:
    """Log-probability (nats) of x ∈ [-1, 1] under a Gaussian discretised into 256 bins, edge bins open-ended."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


class GaussianDiffusion:
    """Schedule tables (float64, gathered per sample as float32 like IDDPM) and the training losses."""

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        betas = linear_betas(num_timesteps, beta_start, beta_end)
        alphas = 1.0 - betas
        acp = torch.cumprod(alphas, dim=0)
        acp_prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
        self.num_timesteps = num_timesteps
        self.betas = betas
        self.alphas_cumprod = acp
        self.alphas_cumprod_prev = acp_prev
        self.sqrt_alphas_cumprod = acp.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - acp).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / acp).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / acp - 1.0).sqrt()
        self.posterior_variance = betas * (1.0 - acp_prev) / (1.0 - acp)
        # The posterior variance is 0 at t = 0; its log is clipped to the t = 1 value, as IDDPM does.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * acp_prev.sqrt() / (1.0 - acp)
        self.posterior_mean_coef2 = (1.0 - acp_prev) * alphas.sqrt() / (1.0 - acp)
        self.log_betas = torch.log(betas)

    @staticmethod
    def _gather(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        values = table.to(t.device)[t].float()
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform timesteps in [0, num_timesteps), as PixArt draws them (on the generator's device, then `device`)."""
        drawn = torch.randint(0, self.num_timesteps, (batch,), generator=generator,
                              device=generator.device if generator is not None else device)
        return drawn if device is None else drawn.to(device)

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·noise."""
        return (self._gather(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """(mean, variance, clipped log-variance) of q(x_{t-1} | x_t, x_0)."""
        mean = (self._gather(self.posterior_mean_coef1, t, x_t) * x_start
                + self._gather(self.posterior_mean_coef2, t, x_t) * x_t)
        return (mean, self._gather(self.posterior_variance, t, x_t),
                self._gather(self.posterior_log_variance_clipped, t, x_t))

    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> dict:
        """p_θ(x_{t-1} | x_t) from a [B, 2C, …] eps + learned-range output (no clipping of x_0, as in training)."""
        eps, v = self.split_output(model_output, x_t)
        frac = (v + 1.0) / 2.0
        log_variance = (frac * self._gather(self.log_betas, t, x_t)
                        + (1.0 - frac) * self._gather(self.posterior_log_variance_clipped, t, x_t))
        pred_xstart = (self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                       - self._gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {"mean": mean, "log_variance": log_variance, "pred_xstart": pred_xstart}

    @staticmethod
    def split_output(model_output: torch.Tensor, x_t: torch.Tensor):
        """(eps, v) halves of the model output; refuses an output without the variance channels."""
        channels = x_t.shape[1]
        if model_output.shape[1] != 2 * channels or model_output.shape[2:] != x_t.shape[2:]:
            raise ValueError(f"model output {tuple(model_output.shape)} must be [B, 2·{channels}, "
                             f"{', '.join(map(str, x_t.shape[2:]))}] (eps + learned-range variance); "
                             f"build the transformer with out_channels={2 * channels}")
        return model_output[:, :channels], model_output[:, channels:]

    def vb_terms_bpd(self, model_output, x_start, x_t, t) -> torch.Tensor:
        """Per-sample VB term in bits: the posterior KL for t > 0, the discretised decoder NLL at t = 0."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        p = self.p_mean_variance(model_output, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, p["mean"], p["log_variance"])) / LOG2
        nll = -discretized_gaussian_log_likelihood(x_start, means=p["mean"], log_scales=0.5 * p["log_variance"])
        return torch.where(t == 0, mean_flat(nll) / LOG2, kl)

    def training_losses(self, model_output: torch.Tensor, x_start: torch.Tensor, noise: torch.Tensor,
                        t: torch.Tensor, x_t: torch.Tensor | None = None) -> dict:
        """Per-sample {"loss", "mse", "vb"} for a [B, 2C, …] model output at x_t = q_sample(x_start, t, noise)."""
        model_output, x_start, noise = model_output.float(), x_start.float(), noise.float()
        x_t = self.q_sample(x_start, t, noise) if x_t is None else x_t.float()
        eps, v = self.split_output(model_output, x_t)
        mse = mean_flat((noise - eps) ** 2)
        # The VB term sees a detached eps: it trains only the variance head (IDDPM's "frozen_out").
        vb = self.vb_terms_bpd(torch.cat([eps.detach(), v], dim=1), x_start, x_t, t)
        return {"loss": mse + vb, "mse": mse, "vb": vb}
