"""MindSpore's `nn.AdamWeightDecay`, the seed's optimizer, as a torch optimizer.

Adam with decoupled weight decay and no bias correction (mindspore/nn/optim/adam.py,
`_update_run_op`), per parameter, in float32:

    m = b1 m + (1 - b1) g
    v = b2 v + (1 - b2) g^2
    p = p - lr (m / (sqrt(v) + eps) + wd p)        (wd only in the decayed group)

torch's AdamW divides m and v by 1 - b^t: early in training, the seed's steps are larger by
up to sqrt(1 - b2^t) / (1 - b1^t) (about 3x at the first step). The state is named as torch's
Adam names it (`exp_avg`, `exp_avg_sq`), so tools that read optimizer states find it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class AdamWeightDecay(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p)
                    self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
            beta1, beta2 = group["betas"]
            # The multi-tensor (foreach) kernels torch's own optimizers use: one launch per
            # operation for the whole group.
            torch._foreach_mul_(exp_avgs, beta1)
            torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            denominators = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_add_(denominators, group["eps"])
            updates = torch._foreach_div(exp_avgs, denominators)
            if group["weight_decay"]:
                torch._foreach_add_(updates, params, alpha=group["weight_decay"])
            torch._foreach_add_(params, updates, alpha=-group["lr"])
        return loss
