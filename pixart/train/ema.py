"""Exponential moving average of a model's parameters (the original's `ema_update`, rate 0.9999 per sync step)."""
import torch


class Ema:
    """Float32 shadow copies of the trainable parameters, keyed by name (buffers are not averaged)."""

    def __init__(self, model: torch.nn.Module, rate: float):
        self.rate = rate
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                shadow = self.shadow[name]
                if shadow.device != p.device:  # made or resumed on the CPU, the model since moved (accelerate's prepare)
                    shadow = self.shadow[name] = shadow.to(p.device)
                shadow.lerp_(p.detach().float(), 1.0 - self.rate)

    def state_dict(self, model: torch.nn.Module) -> dict:
        """The model's full state dict with the averaged parameters in place of the live ones."""
        return {k: (self.shadow[k].to(device=v.device, dtype=v.dtype) if k in self.shadow else v.detach().clone())
                for k, v in model.state_dict().items()}

    def load(self, shadow: dict) -> None:
        missing = sorted(set(self.shadow) - set(shadow))
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameter(s), e.g. {missing[:3]}")
        self.shadow = {k: shadow[k].float().clone() for k in self.shadow}
