"""Training throughput of train.train() on the baseline vs a minimal nanoGPT-style loop and model of the
same dimensions, measured in one run (goal: train() within 10% of the minimal loop).

    python benchmarks/train_loop_speed.py [--steps=10] [--rounds=3] [--key=value ...]

Three contestants, in alternating rounds so that all see the same machine load:
  train()        the project's loop (train.py) on the baseline (ModelConfig with fs_periods=0); its
                 tokens_per_s, which counts training steps only (evaluations excluded)
  minimal+Model  a bare nanoGPT-style loop (batch, forward, backward, clip, step) on the same Model
  minimal+GPT    the same loop on a ~60-line nanoGPT-style GPT with the same dimensions (RMSNorm,
                 multi-query attention through SDPA with one q/k/v matmul and rotary tables computed
                 once, SwiGLU, tied embedding, dropout on the embedding and the residual branches, like
                 the Model)
Each contestant's best round gives its tokens per second; the ratios compare them. `--key=value` overrides
ModelConfig or TrainConfig fields (batch_size, dim, ...). Needs the TinyStories sample (or --data_path).
"""

import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tools  # noqa: E402
from config import ModelConfig, TrainConfig, parse_overrides, replace  # noqa: E402
from modules.model import Model  # noqa: E402
from optimizer import lr_at, make_optimizer  # noqa: E402
from trainer import train  # noqa: E402


def rope(x, cos, sin):
    """x: (B, H, T, hd) rotated by position (pairs i and i + hd/2); cos, sin: (T, hd/2), precomputed."""
    x1, x2 = x.split(x.shape[-1] // 2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg, hidden):
        super().__init__()
        self.cfg, hd = cfg, cfg.head_dim
        self.n1, self.n2 = nn.RMSNorm(cfg.dim, eps=cfg.eps), nn.RMSNorm(cfg.dim, eps=cfg.eps)
        self.qkv = nn.Linear(cfg.dim, (cfg.num_q_heads + 2 * cfg.num_kv_heads) * hd, bias=False)  # nanoGPT's c_attn
        self.o = nn.Linear(cfg.num_q_heads * hd, cfg.dim, bias=False)
        self.up = nn.Linear(cfg.dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.dim, bias=False)
        self.drop = nn.Dropout(cfg.dropout_rate)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        c = self.cfg
        q, k, v = self.qkv(self.n1(x)).view(B, T, -1, c.head_dim).transpose(1, 2).split(
            [c.num_q_heads, c.num_kv_heads, c.num_kv_heads], dim=1)                   # (B, H.., T, hd)
        a = F.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v, is_causal=True,
                                           enable_gqa=c.num_q_heads != c.num_kv_heads)
        x = x + self.drop(self.o(a.transpose(1, 2).reshape(B, T, -1)))
        gate, up = self.up(self.n2(x)).chunk(2, dim=-1)
        return x + self.drop(self.down(F.silu(gate) * up))


class MiniGPT(nn.Module):
    """nanoGPT's shape with Llama's parts: pre-norm blocks, a fused q/k/v projection, rotary tables computed
    once, SDPA, a SwiGLU MLP, a tied output."""

    def __init__(self, cfg):
        super().__init__()
        hidden = int(cfg.mlp_hidden_mult * cfg.dim * 2 / 3)
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg, hidden) for _ in range(cfg.num_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout_rate)
        half = cfg.head_dim // 2
        angles = torch.arange(cfg.max_seq_len)[:, None] * cfg.theta ** (-torch.arange(half) / half)  # (T, hd/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.drop(self.emb(idx) * math.sqrt(self.cfg.dim))
        for block in self.blocks:
            x = block(x, self.cos[:T], self.sin[:T])
        logits = F.linear(self.norm(x), self.emb.weight)
        return logits, F.cross_entropy(logits.flatten(0, 1), targets[:, :T].flatten())


def minimal_loop(model, data, mcfg, tcfg, steps) -> float:
    """nanoGPT's loop, bare: returns training tokens per second."""
    opt = make_optimizer(model, tcfg, "cpu")
    gen = torch.Generator().manual_seed(0)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tcfg)
        x, y = tools.get_batch(data, "train", tcfg.batch_size, mcfg.max_seq_len, 1, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
    return steps * tcfg.batch_size * mcfg.max_seq_len / (time.perf_counter() - t0)


def main(argv):
    (m_over, t_over), opts = parse_overrides(argv, ModelConfig, TrainConfig, extra={"steps": int, "rounds": int})
    steps, rounds = opts.get("steps", 10), opts.get("rounds", 3)
    mcfg = replace(ModelConfig(), **{**m_over, "fs_periods": 0})  # the baseline, always
    tcfg = replace(TrainConfig(data_path=tools.SAMPLE_PATH, val_data_path=tools.VALID_SAMPLE_PATH),
                   **{"max_iters": steps, "eval_interval": steps, "eval_samples": 1, "device": "cpu", **t_over})
    data = tools.get_data(mcfg, tcfg)
    torch.manual_seed(0)
    ours, mini = Model(mcfg), MiniGPT(mcfg)
    print(f"baseline: {ours.num_params() / 1e6:.3f}M parameters; minimal GPT: "
          f"{sum(p.numel() for p in mini.parameters()) / 1e6:.3f}M; {mcfg.num_layers} layers, dim {mcfg.dim}, "
          f"batch {tcfg.batch_size} x {mcfg.max_seq_len}, {steps} steps a round, {rounds} rounds, "
          f"{torch.get_num_threads()} threads")
    best = {"train()": 0.0, "minimal+Model": 0.0, "minimal+GPT": 0.0}
    for r in range(rounds):
        got = {"train()": train(mcfg, tcfg, save=False, data=data, progress=False).log[-1]["tokens_per_s"],
               "minimal+Model": minimal_loop(ours, data, mcfg, tcfg, steps),
               "minimal+GPT": minimal_loop(mini, data, mcfg, tcfg, steps)}
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:,.0f} tok/s" for k, v in got.items()))
        best = {k: max(best[k], got[k]) for k in best}
    print("best rounds: " + ", ".join(f"{k} {v:,.0f} tok/s" for k, v in best.items()))
    print(f"train() / minimal+GPT = {best['train()'] / best['minimal+GPT']:.3f}  (goal >= 0.90)")
    print(f"minimal+Model / minimal+GPT = {best['minimal+Model'] / best['minimal+GPT']:.3f}  (the model's share)")
    print(f"train() / minimal+Model = {best['train()'] / best['minimal+Model']:.3f}  (the loop's share)")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:  # a bad --key=value
        sys.exit(f"error: {e}")
