import math

import pytest
import torch

from pixart.train.diffusion import (GaussianDiffusion, discretized_gaussian_log_likelihood, linear_betas, mean_flat,
                                    normal_kl)

C = 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion()


def _alpha_bar(t: int) -> float:
    return math.prod(1.0 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(t + 1))


def test_schedule_matches_diffusers_ddpm(diffusion):
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000)
    assert diffusion.num_timesteps == 1000
    torch.testing.assert_close(diffusion.betas.float(), ref.betas, rtol=0, atol=1e-8)
    torch.testing.assert_close(diffusion.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_linear_betas_rescale_like_iddpm():
    torch.testing.assert_close(linear_betas(100), torch.linspace(1e-3, 0.2, 100, dtype=torch.float64))


def test_q_sample_closed_form(diffusion):
    x0, noise = torch.randn(3, C, 4, 4), torch.randn(3, C, 4, 4)
    t = torch.tensor([0, 400, 999])
    x_t = diffusion.q_sample(x0, t, noise)
    for i, step in enumerate(t.tolist()):
        a = _alpha_bar(step)
        torch.testing.assert_close(x_t[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i], rtol=1e-5, atol=1e-5)


def test_posterior_closed_form(diffusion):
    x0, x_t = torch.randn(4, C, 2, 2), torch.randn(4, C, 2, 2)
    t = torch.tensor([0, 1, 500, 999])
    mean, var, log_var = diffusion.q_posterior_mean_variance(x0, x_t, t)
    for i, step in enumerate(t.tolist()):
        beta = 1e-4 + (0.02 - 1e-4) * step / 999
        a, a_prev = _alpha_bar(step), _alpha_bar(step - 1) if step else 1.0
        coef1, coef2 = beta * math.sqrt(a_prev) / (1 - a), (1 - a_prev) * math.sqrt(1 - beta) / (1 - a)
        expected_mean = coef1 * x0[i] + coef2 * x_t[i]
        torch.testing.assert_close(mean[i], expected_mean, rtol=1e-5, atol=1e-6)
        assert var[i].item() == pytest.approx(beta * (1 - a_prev) / (1 - a), rel=1e-5, abs=1e-12)
    # log-variance at t = 0 is clipped to the t = 1 value, the rest is the plain log
    assert log_var[0].item() == pytest.approx(log_var[1].item())
    assert log_var[2].item() == pytest.approx(math.log(var[2].item()), rel=1e-5)


def test_learned_range_interpolates_between_posterior_and_beta(diffusion):
    x_t, t = torch.randn(2, C, 2, 2), torch.tensor([10, 10])
    eps = torch.randn(2, C, 2, 2)
    v = torch.stack([-torch.ones(C, 2, 2), torch.ones(C, 2, 2)])
    log_var = diffusion.p_mean_variance(torch.cat([eps, v], 1), x_t, t)["log_variance"]
    assert log_var[0].mean().item() == pytest.approx(diffusion.posterior_log_variance_clipped[10].item(), rel=1e-5)
    assert log_var[1].mean().item() == pytest.approx(math.log(diffusion.betas[10].item()), rel=1e-5)


def test_kl_of_identical_gaussians_is_zero():
    mean, logvar = torch.randn(5), torch.randn(5)
    assert normal_kl(mean, logvar, mean, logvar).abs().max().item() < 1e-6
    assert (normal_kl(mean, logvar, mean + 1, logvar) > 0).all()


def test_discretized_likelihood_sums_to_one_over_bins():
    grid = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in ((0.0, math.log(0.3)), (0.4, math.log(0.05)), (-0.9, math.log(1.0))):
        logp = discretized_gaussian_log_likelihood(grid, means=torch.full_like(grid, mean),
                                                   log_scales=torch.full_like(grid, log_scale))
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_losses_shapes_and_t0_uses_decoder_nll(diffusion):
    x0, noise = torch.rand(3, C, 4, 4) * 2 - 1, torch.randn(3, C, 4, 4)
    t = torch.tensor([0, 0, 5])
    out = torch.randn(3, 2 * C, 4, 4)
    terms = diffusion.training_losses(out, x0, noise, t)
    assert set(terms) == {"loss", "mse", "vb"} and all(v.shape == (3,) for v in terms.values())
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    torch.testing.assert_close(terms["mse"], mean_flat((noise - out[:, :C]) ** 2))
    x_t = diffusion.q_sample(x0, t, noise)
    p = diffusion.p_mean_variance(out, x_t, t)
    nll = -discretized_gaussian_log_likelihood(x0, means=p["mean"], log_scales=0.5 * p["log_variance"])
    torch.testing.assert_close(terms["vb"][:2], mean_flat(nll)[:2] / math.log(2))


def test_vb_term_trains_only_the_variance_head(diffusion):
    x0, noise = torch.randn(4, C, 4, 4), torch.randn(4, C, 4, 4)
    t = torch.tensor([0, 3, 300, 999])
    out = torch.randn(4, 2 * C, 4, 4, requires_grad=True)
    diffusion.training_losses(out, x0, noise, t)["vb"].sum().backward()
    assert out.grad[:, :C].abs().max().item() == 0.0
    assert out.grad[:, C:].abs().max().item() > 0.0
    out.grad = None
    terms = diffusion.training_losses(out, x0, noise, t)
    terms["loss"].sum().backward()
    mse_grad = -2 * (noise - out.detach()[:, :C]) / out[0, :C].numel()
    torch.testing.assert_close(out.grad[:, :C], mse_grad)


def test_wrong_output_channels_are_refused(diffusion):
    with pytest.raises(ValueError, match="out_channels=8"):
        diffusion.training_losses(torch.randn(2, C, 4, 4), torch.randn(2, C, 4, 4), torch.randn(2, C, 4, 4),
                                  torch.tensor([1, 2]))


def test_sample_timesteps_uniform_and_seeded(diffusion):
    a = diffusion.sample_timesteps(5000, torch.Generator().manual_seed(1))
    b = diffusion.sample_timesteps(5000, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.long
    assert a.min().item() >= 0 and a.max().item() <= 999 and 400 < a.float().mean().item() < 600


class _TinyDenoiser(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(C + 1, 32, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(32, 2 * C, 3, padding=1))

    def forward(self, x, t):
        t_map = (t.float() / 1000).reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.net(torch.cat([x, t_map], 1))


def test_tiny_model_loss_decreases_on_constant_target(diffusion):
    torch.manual_seed(0)
    model = _TinyDenoiser()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x0 = torch.full((16, C, 8, 8), 0.5)
    gen = torch.Generator().manual_seed(0)
    eval_t = diffusion.sample_timesteps(64, torch.Generator().manual_seed(9))
    eval_noise = torch.randn(64, C, 8, 8, generator=torch.Generator().manual_seed(9))
    eval_x0 = torch.full((64, C, 8, 8), 0.5)

    def eval_loss():
        with torch.no_grad():
            x_t = diffusion.q_sample(eval_x0, eval_t, eval_noise)
            return diffusion.training_losses(model(x_t, eval_t), eval_x0, eval_noise, eval_t)["loss"].mean().item()

    before = eval_loss()
    for _ in range(60):
        t = diffusion.sample_timesteps(16, gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = diffusion.q_sample(x0, t, noise)
        loss = diffusion.training_losses(model(x_t, t), x0, noise, t, x_t=x_t)["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()
    assert after < 0.7 * before, (before, after)
