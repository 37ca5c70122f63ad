"""The optimizer (AdamW, weight decay on matrices only), the learning-rate schedule, and the moving average of the
weights (`ema_decay`)."""

import math

import torch

from config import TrainConfig
from modules.model import Model
from runs import cpu_state


def lr_at(step: int, tcfg: TrainConfig) -> float:
    """The learning-rate schedule (docs/design.md §4): linear warm-up from lr_init to lr_max; then num_restarts + 1
    annealing cycles from lr_max to lr_min (cosine or linear), each T_mult times longer than the one
    before and restarting at lr_max; then lr_min, flat, for the last final_flat_iters steps."""
    warm, flat = tcfg.warmup_iters, tcfg.final_flat_iters
    if step < warm:
        return tcfg.lr_init + (tcfg.lr_max - tcfg.lr_init) * step / warm
    t, anneal = step - warm, tcfg.max_iters - warm - flat
    if t >= anneal:
        return tcfg.lr_min
    cycle_len = anneal / sum(tcfg.T_mult ** j for j in range(tcfg.num_restarts + 1))  # T_0
    for _ in range(tcfg.num_restarts):  # find the cycle t falls in
        if t < cycle_len:
            break
        t, cycle_len = t - cycle_len, cycle_len * tcfg.T_mult
    frac = min(t / cycle_len, 1.0)
    if tcfg.anneal_type == "cos":
        return tcfg.lr_min + 0.5 * (tcfg.lr_max - tcfg.lr_min) * (1 + math.cos(math.pi * frac))
    return tcfg.lr_max - (tcfg.lr_max - tcfg.lr_min) * frac


def lr_schedule(tcfg: TrainConfig) -> list[float]:
    """The learning rate of every step 0 .. max_iters - 1, for plotting."""
    return [lr_at(step, tcfg) for step in range(tcfg.max_iters)]


def plot_lr_schedule(tcfg: TrainConfig, ax=None):
    """A plot of `lr_schedule(tcfg)`; returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    ax.plot(lr_schedule(tcfg))
    ax.set(xlabel="step", ylabel="learning rate",
           title=f"{tcfg.anneal_type} annealing, {tcfg.num_restarts} restarts, warm-up {tcfg.warmup_iters}, "
                 f"flat {tcfg.final_flat_iters}")
    ax.grid(alpha=0.3)
    return ax


def make_optimizer(model, tcfg: TrainConfig, device: str):
    """AdamW; weight decay on matrices (linear weights, embedding) only, never on norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tcfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tcfg.lr_init, betas=(0.9, 0.95), fused=device == "cuda" or None)


class WeightAverage:
    """An exponential moving average of a model's weights (TrainConfig.ema_decay), kept in a copy of the model
    that train() evaluates, logs and saves instead of the last weights. After n optimizer steps it holds
    sum_k d**(n-k) w_k / sum_k d**(n-k) over the weights w_1 .. w_n after each step (d = ema_decay): a plain
    exponential average over about 1 / (1 - d) steps, with the initial weights left out (Adam's bias
    correction, done in place: avg <- avg + (w - avg) * (1 - d) / (1 - d**n)). Buffers (the future-sight
    weight of the schedule) are copied, not averaged. The average only reads the weights: training itself,
    its batches and its random numbers are unchanged."""

    def __init__(self, model: Model, decay: float):
        import copy

        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: Model) -> None:
        self.updates += 1
        weight = (1.0 - self.decay) / (1.0 - self.decay ** self.updates)  # 1 at the first step
        for avg, now in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(now, weight)
        for avg, now in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(now)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "weights": cpu_state(self.model)}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.model.load_state_dict(state["weights"])
