"""Noise-estimator combinators (DESIGN §2): build a new eps_fn(x_t, t) from a conditional model.

A backbone exposes a *conditional* estimator

    model_fn(x_t, t, cond) -> (eps_hat, v_hat)     x_t (B, C, H, W), cond (B, ...) e.g. T5 embeddings or one-hots

and the functions here bind conditionings to it. Each combinator makes exactly ONE batched call of model_fn
per step, whatever the number of branches, so the cost is one forward of a bigger batch.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

CondEpsFn = Callable[[torch.Tensor, int, torch.Tensor], "tuple[torch.Tensor, Optional[torch.Tensor]]"]


def _repeat(cond: torch.Tensor, B: int) -> torch.Tensor:
    """(1 or B, ...) -> (B, ...)."""
    return cond.expand(B, *cond.shape[1:]) if cond.shape[0] == 1 else cond


def conditional(model_fn: CondEpsFn, cond: torch.Tensor):
    """eps_fn with a fixed conditioning: eps_hat = eps_theta(x_t, t, cond). cond: (1 or B, ...)."""
    def eps_fn(x_t: torch.Tensor, t: int):
        return model_fn(x_t, t, _repeat(cond, x_t.shape[0]))
    return eps_fn


def cfg(model_fn: CondEpsFn, cond: torch.Tensor, uncond: torch.Tensor, gamma: float):
    """Classifier-free guidance [A.4] (Ho & Salimans 2022, eq. 6):

        eps_hat = eps_u + gamma * (eps_c - eps_u)

    gamma = 0 is the unconditional estimate, 1 the conditional one, > 1 trades diversity for fidelity.
    Both branches run as one forward of batch 2B. IF's variance channels v_hat come from the conditional
    branch (only eps is guided). cond, uncond: (1 or B, ...).
    """
    def eps_fn(x_t: torch.Tensor, t: int):
        B = x_t.shape[0]
        x2 = torch.cat([x_t, x_t], dim=0)                                       # (2B, C, H, W)
        c2 = torch.cat([_repeat(cond, B), _repeat(uncond, B)], dim=0)           # (2B, ...)
        eps2, v2 = model_fn(x2, t, c2)
        eps_c, eps_u = eps2[:B], eps2[B:]
        eps_hat = eps_u + gamma * (eps_c - eps_u)
        return eps_hat, (None if v2 is None else v2[:B])
    return eps_fn
