"""Training: `train(model_cfg, train_cfg)` for train.ipynb, and the same from the shell:

    python train.py --data_path=../shared/data/tinystories_sample.txt --max_iters=200 --fs_periods=0

Every `--key=value` is a field of `config.ModelConfig` or `config.TrainConfig` (converted to the field's
type; an unknown key is an error naming the near matches), plus `--trained_dir=PATH` (where run folders
go, default trained/) and `--resume=PATH` (a checkpoint to continue from).

What a run does: AdamW (weight decay on matrices only) with gradient clipping and the learning-rate
schedule (`lr_at`), random windows of the training split, an evaluation every `eval_interval` steps on
`eval_samples` fixed batches of each split, and a last evaluation over the *whole* held-out validation
split in fixed windows (so the last row of the log is deterministic and anyone can recompute it). It
writes trained/<model_name>/ as it goes (configs first, log_data.csv at every evaluation, checkpoints
every `checkpoint_interval` steps, model.pth at the end) and never overwrites an existing folder. With
`ema_decay`, what is evaluated, logged and saved is a moving average of the weights (`WeightAverage`);
`ema_save_last` keeps the last weights as well, as the twin run NAME_last (`last_weights_config`).

Seeds and equal compute:

    python train.py ... --model_name=NAME --seeds=0,1,2        # NAME_s0, NAME_s1, NAME_s2, recorded as group NAME
    python train.py ... --fs_periods=0 --match_flops=futureformer  # as many steps as that run's training FLOPs

log_data.csv has one row per evaluation: step, tokens (training tokens seen), flops (training FLOPs so far,
modules/flops.py: tokens x flops_per_token), elapsed_s (wall time,
evaluations included), tokens_per_s (training throughput, evaluations excluded), lr, grad_norm (mean
pre-clipping norm since the last row), full_val (1 on the last row) and, for split in train and val:
{split}_loss (the total, auxiliary terms included: never compare models on it), {split}_ntp_loss,
{split}_bpb (bits per byte of the NTP loss), {split}_ppl (its perplexity), and per future chunk k
{split}_fs_loss_k and {split}_fs_target_cos_k (mean cosine between targets: near 1 = collapsed).
"""

import contextlib
import csv
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm  # the text bar, also in notebooks: a widget bar is saved as a stale "0/N" in the notebook

import tools
from config import VOCAB_FS_LOSSES, ModelConfig, TrainConfig, from_dict, parse_overrides, replace, to_dict
from dist import Dist
from modules.flops import flops_per_token
from modules.model import Model

# ---------------------------------------------------------------- learning rate


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


# ---------------------------------------------------------------- pieces of a run


def default_name(mcfg: ModelConfig, num_params: int) -> str:
    """Architecture, size in millions of parameters and start time: FutureFormer_1.34m_2026-11-28_09-30."""
    arch = "FutureFormer" if mcfg.fs_periods else "baseline"
    return f"{arch}_{num_params / 1e6:.2f}m_{time.strftime('%Y-%m-%d_%H-%M')}"


def log_columns(mcfg: ModelConfig) -> list[str]:
    cols = ["step", "tokens", "flops", "global_batch", "elapsed_s", "tokens_per_s", "lr", "grad_norm", "full_val"]
    for split in tools.SPLITS:
        cols += [f"{split}_{m}" for m in ("loss", "ntp_loss", "bpb", "ppl")]
        for k in range(1, mcfg.fs_periods + 1):
            cols.append(f"{split}_fs_loss_{k}")
            if mcfg.fs_loss not in VOCAB_FS_LOSSES:
                cols.append(f"{split}_fs_target_cos_{k}")
    return cols


def make_optimizer(model, tcfg: TrainConfig, device: str):
    """AdamW; weight decay on matrices (linear weights, embedding) only, never on norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tcfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tcfg.lr_init, betas=(0.9, 0.95), fused=device == "cuda" or None)


def _metrics(parts: dict, prefix: str, bytes_per_token: float) -> dict:
    ntp = float(parts["ntp_loss"])
    out = {f"{prefix}_loss": float(parts.get("total_loss", ntp)), f"{prefix}_ntp_loss": ntp,
           f"{prefix}_bpb": tools.bits_per_byte(ntp, bytes_per_token),
           f"{prefix}_ppl": math.exp(min(ntp, 80.0))}
    out.update({f"{prefix}_{k}": float(v) for k, v in parts.items() if k.startswith("fs_")})
    return out


@torch.no_grad()
def estimate(model, data, mcfg: ModelConfig, tcfg: TrainConfig, device: str, splits=tools.SPLITS,
             dist: Dist | None = None) -> dict:
    """Mean loss parts over `eval_samples` batches of each split: the same batches at every evaluation
    (a generator seeded from the run's seed), so the curves move with the model, not with the sample. Under
    torchrun each process evaluates every world-th batch and the sums are added up."""
    dist = dist or Dist()
    out = {}
    for i, split in enumerate(tools.SPLITS):
        if split not in splits:
            continue
        gen = torch.Generator().manual_seed(tcfg.seed + 1_000_003 * (i + 1))
        sums = {}
        for b in range(tcfg.eval_samples):
            x, y = tools.get_batch(data, split, tcfg.batch_size, mcfg.max_seq_len, mcfg.lookahead, gen)
            if b % dist.world != dist.rank:
                continue
            model(x.to(device), y.to(device))  # evaluation in fp32, whatever the training precision
            for k, v in model.loss_parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        keys = sorted(set().union(*dist.gather(sorted(sums))))  # every process adds the same parts, in one order
        sums = dict(zip(keys, dist.sum([sums.get(k, 0.0) for k in keys])))
        parts = {k: v / tcfg.eval_samples for k, v in sums.items()}
        out.update(_metrics(parts, split, data.meta[split]["bytes_per_token"]))
    return out


@torch.no_grad()
def evaluate_split(model, data, split: str, mcfg: ModelConfig, batch_size: int, device: str,
                   tcfg: TrainConfig | None = None, dist: Dist | None = None) -> dict:
    """Loss parts over the whole split in fixed, non-overlapping windows (tools.eval_batches): every
    token of the split is a next-token target exactly once. Each batch's mean is weighted by its real
    (non-pad) targets, so `ntp_loss` is the exact mean over the split; the fs parts are weighted the
    same way. Deterministic: anyone can recompute it from the saved model. Under torchrun each process takes
    every world-th batch and the weighted sums are added up."""
    dist = dist or Dist()
    sums, count = {}, 0
    for b, (x, y) in enumerate(tools.eval_batches(data, split, batch_size, mcfg.max_seq_len, mcfg.lookahead)):
        if b % dist.world != dist.rank:
            continue
        n = int((y[:, :x.shape[1]] != data.pad_id).sum())
        model(x.to(device), y.to(device))  # in fp32, whatever the training precision
        for k, v in model.loss_parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        count += n
    keys = sorted(set().union(*dist.gather(sorted(sums))))  # every process adds the same parts, in one order
    *totals, count = dist.sum([sums.get(k, 0.0) for k in keys] + [count])
    return {k: v / count for k, v in zip(keys, totals)}


def _write_log(path: str, rows: list[dict], columns: list[str]) -> None:
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    tools.replace_atomically(path, write)


def _reserve_folder(root: str, name: str | None, default: str) -> str:
    """Create the run folder; never reuse one. A chosen name that exists is an error; the default name
    gets a suffix instead."""
    os.makedirs(root, exist_ok=True)
    if name is not None:
        path = os.path.join(root, name)
        if os.path.exists(path):
            raise FileExistsError(f"{path} already exists and runs are never overwritten: choose another "
                                  "model_name (or move the old run away)")
        os.makedirs(path)
        return path
    for i in range(1, 1000):
        path = os.path.join(root, default if i == 1 else f"{default}_{i}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not find a free folder name for {default} in {root}")


@dataclass
class Run:
    """What `train` returns: the trained model (on its device, in eval mode), its configs, the log rows
    (one dict per evaluation, as in log_data.csv) and the run folder (None if not saved yet)."""

    model: Model
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    log: list = field(default_factory=list)
    path: str | None = None
    stopped_at: int | None = None     # the last completed step, when training was interrupted (Ctrl-C)
    resume_from: str | None = None    # the checkpoint written then
    last: "Run | None" = None         # with ema_save_last: the last weights, as a run of their own (NAME_last)

    def log_frame(self):
        import pandas as pd

        return pd.DataFrame(self.log, columns=log_columns(self.model_cfg))

    def __repr__(self):
        last = self.log[-1] if self.log else {}
        val = f", val_ntp_loss={last['val_ntp_loss']:.4f}, val_bpb={last['val_bpb']:.4f}" if last else ""
        return f"Run(path={self.path!r}, params={self.model.num_params():,}, steps={last.get('step', 0)}{val})"


def save_run(run: Run, trained_dir: str | None = None, model_name: str | None = None) -> str:
    """Write a run trained with save=False to trained_dir/<name>/ (never over an existing folder)."""
    if run.path is not None:
        raise ValueError(f"this run is already saved in {run.path}")
    mcfg, tcfg = run.model_cfg, run.train_cfg
    name = model_name or tcfg.model_name
    run.path = _reserve_folder(trained_dir or tools.TRAINED_DIR, name, default_name(mcfg, run.model.num_params()))
    run.train_cfg = tcfg = replace(tcfg, model_name=os.path.basename(run.path), processes=tcfg.processes or 1)
    tools.save_model(run.path, run.model, mcfg, tcfg)
    _write_log(os.path.join(run.path, "log_data.csv"), run.log, log_columns(mcfg))
    if run.last is not None and run.last.path is None:  # ema_save_last: the last weights go beside it
        run.last.train_cfg = last_weights_config(tcfg)
        run.last.path = _reserve_folder(os.path.dirname(run.path), run.last.train_cfg.model_name, "")
        tools.save_model(run.last.path, run.last.model, mcfg, run.last.train_cfg)
        _write_log(os.path.join(run.last.path, "log_data.csv"), run.last.log, log_columns(mcfg))
    return run.path


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
        return {"updates": self.updates, "weights": tools.cpu_state(self.model)}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.model.load_state_dict(state["weights"])


def last_weights_config(tcfg: TrainConfig) -> TrainConfig:
    """The TrainConfig of an averaged run's twin (ema_save_last): the run of its last weights, which is the run
    the same command without ema_decay gives (same training, other name). Seed runs G_s<seed> of the group G
    get G_last_s<seed> in the group G_last, so that the last weights of a seed group form a group of their own
    for model_comparison; any other name NAME gets NAME_last. An unnamed run (save=False) has an unnamed twin,
    named when save_run saves both."""
    name, group = tcfg.model_name, tcfg.group
    if name is not None and group and name == f"{group}_s{tcfg.seed}":
        name, group = f"{group}_last_s{tcfg.seed}", f"{group}_last"
    elif name is not None:
        name, group = f"{name}_last", f"{group}_last" if group else None
    return replace(tcfg, model_name=name, group=group, ema_decay=None, ema_save_last=False)


def _checkpoint(path: str, step: int, model, opt, gen, state: dict, mcfg, tcfg) -> str:
    folder = os.path.join(path, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    file = os.path.join(folder, f"step_{step:06d}.pt")
    weights = tools.cpu_state(model)
    tools.check_finite(weights, f"the checkpoint {file}")
    if "ema" in state:
        tools.check_finite(state["ema"]["weights"], f"the checkpoint {file} (its averaged weights)")
    ckpt = {"step": step, "model": weights,
            "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "batch_rng": gen.get_state(),
            "model_config": to_dict(mcfg), "train_config": to_dict(tcfg), **state}
    if torch.cuda.is_available():
        ckpt["cuda_rng"] = torch.cuda.get_rng_state_all()
    tools.replace_atomically(file, lambda tmp: torch.save(ckpt, tmp))
    return file


def checkpoint_files(path: str | None) -> list[str]:
    """The checkpoints train() wrote in the run folder `path` (checkpoints/step_*.pt), oldest first."""
    folder = os.path.join(path, "checkpoints") if path else None
    if not folder or not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if re.fullmatch(r"step_\d+\.pt", f)]


def _last_checkpoint(path: str | None) -> str | None:
    files = checkpoint_files(path)
    return files[-1] if files else None


def load_checkpoint(path: str) -> dict:
    """A checkpoint written by train(): plain tensors, numbers and dicts, loaded with weights_only=True."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a checkpoint at all
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120]}); it may be truncated: resume from an earlier one") from None
    missing = [k for k in ("step", "model", "optimizer", "model_config", "train_config", "log") if k not in ckpt]
    if not isinstance(ckpt, dict) or missing:
        raise ValueError(f"{path} is not a checkpoint written by train.py (missing {missing})")
    return ckpt


def _checkpoint_owner(resume: str, ckpt: dict) -> str | None:
    """The run folder that owns the checkpoint file `resume`: the folder F of F/checkpoints/step_*.pt, when F's own
    model_config.json and train_config.json are the checkpoint's configs; else None (a checkpoint copied elsewhere,
    or put into another run's folder)."""
    file = os.path.realpath(resume)
    folder = os.path.dirname(os.path.dirname(file))
    if os.path.basename(os.path.dirname(file)) != "checkpoints" or not re.fullmatch(r"step_\d+\.pt",
                                                                                   os.path.basename(file)):
        return None
    for fname, key in (("model_config.json", "model_config"), ("train_config.json", "train_config")):
        try:
            if tools.read_json(os.path.join(folder, fname), fname) != ckpt[key]:
                return None
        except (OSError, ValueError):
            return None
    return folder


def _resume_folder(resume: str, ckpt: dict, tcfg: TrainConfig, trained_dir: str | None) -> tuple[str, TrainConfig]:
    """Where a resumed run continues, always a folder directly under the runs folder: `trained_dir` if given, else
    the folder of the run that owns the checkpoint (`_checkpoint_owner`), else trained/. In the owner's own folder
    when it is there and nothing would be lost; otherwise in a new folder NAME_from_<step> under the runs folder,
    and a line says why. Nothing is ever written beside a checkpoint that no run folder owns. A folder whose run
    finished (model.pth), or whose log_data.csv runs past the checkpoint's step (a later crash, or resuming an
    earlier checkpoint), is kept as it is."""
    owner = _checkpoint_owner(resume, ckpt)
    root = os.path.realpath(trained_dir or (os.path.dirname(owner) if owner else tools.TRAINED_DIR))
    if owner is not None and os.path.dirname(owner) == root:
        logged = 0
        log_file = os.path.join(owner, "log_data.csv")
        if os.path.isfile(log_file):
            with open(log_file, newline="") as f:
                steps = [int(float(r["step"])) for r in csv.DictReader(f) if r.get("step")]
            logged = max(steps, default=0)
        finished = os.path.isfile(os.path.join(owner, "model.pth"))
        if not finished and logged <= ckpt["step"]:
            return owner, tcfg
        why = (f"{owner} {'finished' if finished else f'has logged up to step {logged}'}, past the checkpoint's step "
               f"{ckpt['step']}: it is left as it is")
    elif owner is not None:
        why = f"the checkpoint's run folder {owner} is not in the runs folder {root}"
    elif os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(resume))), "train_config.json")):
        why = (f"{resume} is not a checkpoint of the run whose folder it lies in (the configs differ): that run "
               "is left as it is")
    else:
        why = f"{resume} does not lie in the checkpoints/ of the run folder whose configs it holds"
    name = f"{tcfg.model_name or 'resumed'}_from_{ckpt['step']}"
    new = _reserve_folder(root, None, name)
    print(f"{why}; the run continues in {new}", file=sys.stderr)
    return new, replace(tcfg, model_name=os.path.basename(new))


# ---------------------------------------------------------------- the loop


def train(model_cfg: ModelConfig | None = None, train_cfg: TrainConfig | None = None, *,
          trained_dir: str | None = None, save: bool = True, resume: str | None = None,
          data: tools.TokenData | None = None, progress: bool = True) -> Run:
    """Train a model and return the Run. With `save`, trained_dir/<model_name>/ is written as the run goes
    (default trained_dir: the repository's trained/); `resume` continues from a checkpoint file of such a
    folder, in that folder, exactly where it stopped (configs come from the checkpoint when not given).
    `data` skips `tools.get_data` (e.g. when a notebook already loaded it)."""
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        saved_m, saved_t = from_dict(ModelConfig, ckpt["model_config"]), from_dict(TrainConfig, ckpt["train_config"])
        for given, saved in ((model_cfg, saved_m), (train_cfg, saved_t)):
            if given is not None and to_dict(given) != to_dict(saved):
                diff = {k: (v, to_dict(saved)[k]) for k, v in to_dict(given).items() if to_dict(saved)[k] != v}
                raise ValueError(f"the config given differs from the checkpoint's: {diff} (given, saved); "
                                 "leave it out to use the checkpoint's")
        model_cfg, train_cfg = saved_m, saved_t
    if model_cfg is None or train_cfg is None:
        raise ValueError("train() needs a ModelConfig and a TrainConfig (or resume=<checkpoint>)")
    mcfg, tcfg = model_cfg, train_cfg
    if tcfg.checkpoint_interval and not save:
        raise ValueError(f"checkpoint_interval={tcfg.checkpoint_interval} needs save=True: checkpoints go "
                         "into the run folder")
    device = tools.pick_device(tcfg.device)
    dist = Dist.from_env(device)  # one process, unless started by torchrun
    try:
        return _train(mcfg, tcfg, train_cfg, ckpt, resume, trained_dir, save, data, progress, device, dist)
    finally:
        dist.close()


def _train(mcfg, tcfg, train_cfg, ckpt, resume, trained_dir, save, data, progress, device, dist) -> Run:
    # the precision is resolved once, here, and saved: a resumed run goes on in the precision it started in
    precision, why = tools.pick_precision(tcfg.precision, device)
    tcfg = replace(tcfg, precision=precision)
    if not dist.is_main:
        dist.barrier()  # the first process tokenizes into the cache, the others then read it
    data = data if data is not None else tools.get_data(mcfg, tcfg)
    if dist.is_main:
        dist.barrier()
    if data.tokenizer.vocab_len != mcfg.vocab_len:
        raise ValueError(f"the data was tokenized with vocab_len={data.tokenizer.vocab_len}, the model has "
                         f"vocab_len={mcfg.vocab_len}")
    if ckpt is not None and ckpt.get("world", 1) != dist.world:
        raise ValueError(f"{resume} was written by {ckpt.get('world', 1)} process(es); resume it with as many "
                         f"(torchrun --nproc_per_node={ckpt.get('world', 1)}), this is {dist.world}")

    torch.manual_seed(tcfg.seed)
    model = Model(mcfg).to(device)
    if dist.rank:  # every process starts from the same weights, and draws its own dropout masks
        torch.manual_seed(tcfg.seed + 7919 * dist.rank)
    opt = make_optimizer(model, tcfg, device)
    gen = torch.Generator().manual_seed(tcfg.seed)  # the training batches: the same draws in every process
    log, start = [], 0
    last_log, last_path = [], None  # with ema_save_last: the log and the folder of the last weights' twin run
    tokens_per_step = tcfg.batch_size * tcfg.grad_accum_steps * dist.world * mcfg.max_seq_len  # the global batch
    passes = tcfg.max_iters * tokens_per_step / int(data.meta["train"]["tokens"])
    tcfg = replace(tcfg, train_tokens=int(data.meta["train"]["tokens"]), passes=round(passes, 4),
                   machine=tcfg.machine if ckpt is not None and tcfg.machine else tools.machine_name(device))
    clock = {"elapsed_s": 0.0, "train_time_s": 0.0}
    path = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rngs"][dist.rank] if "torch_rngs" in ckpt else ckpt["torch_rng"])
        gen.set_state(ckpt["batch_rng"])
        if "cuda_rng" in ckpt and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        start, log = ckpt["step"], list(ckpt["log"])
        last_log = list(ckpt.get("last_log", []))
        clock = {k: ckpt[k] for k in clock}
        if dist.is_main:
            path, tcfg = _resume_folder(resume, ckpt, tcfg, trained_dir)
            if not os.path.isfile(os.path.join(path, "train_config.json")) or tcfg.model_name != train_cfg.model_name:
                tools.save_configs(path, mcfg, tcfg)
            if log:
                _write_log(os.path.join(path, "log_data.csv"), log, log_columns(mcfg))
            if tcfg.ema_save_last:  # the twin folder goes beside the run's, and follows it to NAME_from_<step>
                last_cfg = last_weights_config(tcfg)
                last_path = os.path.join(os.path.dirname(path), last_cfg.model_name)
                tools.save_configs(last_path, mcfg, last_cfg)
                if last_log:
                    _write_log(os.path.join(last_path, "log_data.csv"), last_log, log_columns(mcfg))
    elif save and dist.is_main:  # only the first process writes the run folder
        root = trained_dir or tools.TRAINED_DIR
        path = _reserve_folder(root, tcfg.model_name, default_name(mcfg, model.num_params()))
        # the config records the name it is saved under, and how many processes trained it (the global batch)
        tcfg = replace(tcfg, model_name=os.path.basename(path), processes=dist.world)
        if tcfg.ema_save_last:
            last_cfg = last_weights_config(tcfg)
            try:
                last_path = _reserve_folder(root, last_cfg.model_name, "")
            except FileExistsError:
                shutil.rmtree(path, ignore_errors=True)
                raise
            tools.save_configs(last_path, mcfg, last_cfg)
        tools.save_configs(path, mcfg, tcfg)  # now, so that even a crashed run says what it was
    # removed again if the run fails before its first step
    created = [p for p in (path, last_path) if p] if ckpt is None else []
    ema = WeightAverage(model, tcfg.ema_decay) if tcfg.ema_decay else None
    if ema is not None and ckpt is not None:
        ema.load_state_dict(ckpt["ema"])
    judged = ema.model if ema is not None else model  # what the log evaluates and model.pth keeps
    columns = log_columns(mcfg)
    fpt = flops_per_token(mcfg)
    compiling = will_compile(tcfg, device)
    progress = progress and dist.is_main
    wrapped = model
    if dist.active:  # gradients averaged over the processes as backward goes
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[dist.local_rank] if device == "cuda" else None)
    step_model = torch.compile(wrapped) if compiling else wrapped

    def measure(net, full):
        out = estimate(net, data, mcfg, tcfg, device, splits=("train",) if full else tools.SPLITS, dist=dist)
        if full:  # the val columns of the last row: the whole held-out split, instead of eval_samples batches
            parts = evaluate_split(net, data, "val", mcfg, tcfg.batch_size, device, tcfg, dist)
            out.update(_metrics(parts, "val", data.meta["val"]["bytes_per_token"]))
        return out

    def log_row(step, grad_norms, full):
        """The log row of `judged` at this step, and with ema_save_last the last weights' row (else None)."""
        if device == "cuda":
            torch.cuda.synchronize()
        model.eval()
        row = {"step": step, "tokens": step * tokens_per_step, "flops": round(step * tokens_per_step * fpt),
               "global_batch": tokens_per_step // mcfg.max_seq_len,
               "elapsed_s": 0.0,
               "tokens_per_s": step * tokens_per_step / max(clock["train_time_s"], 1e-9),
               "lr": lr_at(min(step, tcfg.max_iters - 1), tcfg),
               "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
               "full_val": int(full)}
        last_row = {**row, **measure(model, full)} if tcfg.ema_save_last else None
        row.update(measure(judged, full))
        model.train()
        for r in filter(None, (row, last_row)):
            if not math.isfinite(r["train_ntp_loss"]):
                raise FloatingPointError(f"the training loss is {r['train_ntp_loss']} at step {step}: try a "
                                         f"lower lr_max (now {tcfg.lr_max}) or grad_clip")
        return row, last_row

    if progress and start == 0:
        print(f"data: {tools.describe_data(data)}; {tcfg.max_iters} steps make {passes:.2f} passes over the "
              "training split")
        micro = f"({tcfg.grad_accum_steps} micro-batches of {tcfg.batch_size}) " if tcfg.grad_accum_steps > 1 else ""
        print(f"training a {'FutureFormer' if mcfg.fs_periods else 'baseline'} of {model.num_params() / 1e6:.3f}M "
              f"parameters for {tcfg.max_iters} steps of {tokens_per_step // mcfg.max_seq_len} x {mcfg.max_seq_len} "
              f"tokens {micro}({tcfg.max_iters * tokens_per_step * fpt:.3g} FLOPs) on {device} in {precision} ({why})")
    elif progress:
        print(f"resuming at step {start} of {tcfg.max_iters} on {device} in {precision} ({why})")
    model.train()
    bar = tqdm(total=tcfg.max_iters, initial=start, desc=os.path.basename(path) if path else "training",
               unit="step", dynamic_ncols=True, disable=not progress)
    if compiling and progress:
        bar.write("compiling the training step with torch.compile (measured 23-60 s on 2 CPU cores for the default "
                  "models; --compile=false skips it)", file=sys.stderr)
    quiet = tools.quiet_compile if compiling else contextlib.nullcontext  # inductor's warnings off the progress bar
    t_start = time.perf_counter() - clock["elapsed_s"]
    grad_norms = list(ckpt.get("grad_norms", [])) if ckpt is not None else []  # since the last log row
    stop = _StopFlag()
    done = start
    try:
        with stop:
            for step in range(start, tcfg.max_iters):
                t0 = time.perf_counter()
                lr = lr_at(step, tcfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                model.loss_fn.set_progress(step / tcfg.max_iters)  # a scheduled future-sight weight follows the run
                # the step's whole batch, then its micro-batches (grad_accum_steps of batch_size sequences each):
                # one draw, so that accumulating gives the sequences one big batch would
                # (every process draws the same; process r takes micro-batches r*A .. r*A + A - 1 of them)
                xs, ys = tools.get_batch(data, "train", tokens_per_step // mcfg.max_seq_len, mcfg.max_seq_len,
                                         mcfg.lookahead, gen)
                opt.zero_grad(set_to_none=True)
                loss_value = 0.0
                for a in range(tcfg.grad_accum_steps):
                    first = (dist.rank * tcfg.grad_accum_steps + a) * tcfg.batch_size
                    rows = slice(first, first + tcfg.batch_size)
                    x, y = xs[rows].to(device, non_blocking=True), ys[rows].to(device, non_blocking=True)
                    last = a == tcfg.grad_accum_steps - 1  # DDP averages gradients on the last micro-batch only
                    with contextlib.nullcontext() if last or not dist.active else wrapped.no_sync():
                        if compiling and step == start and a == 0:  # the first call compiles; if that fails, eager
                            step_model, loss = _first_compiled_forward(step_model, wrapped, x, y, device, tcfg)
                        else:
                            with tools.autocast(device, tcfg.precision), quiet():
                                _, loss = step_model(x, y)
                        with quiet():  # torch.compile recompiles where a guard fails: at step 1, for the rope table
                            (loss / tcfg.grad_accum_steps).backward()  # the gradient of the mean over micro-batches
                    loss_value = loss_value + loss.detach() / tcfg.grad_accum_steps
                if compiling and step == start and progress:
                    done_in = f"compiled: the first step took {time.perf_counter() - t0:.1f} s"
                    bar.write(done_in if step_model is not wrapped else
                              "torch.compile failed (see the warning): training eagerly", file=sys.stderr)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip or float("inf"))
                # one exchange a step tells every process whether any saw a NaN (stop before the weights change)
                # or a Ctrl-C (stop them all after this same step)
                nonfinite, stopping = dist.any(not bool(torch.isfinite(loss_value) & torch.isfinite(norm)), bool(stop))
                if nonfinite:
                    raise NonFiniteError(step + 1, float(loss_value), float(norm), _last_checkpoint(path), tcfg)
                opt.step()
                if ema is not None:
                    ema.update(model)
                grad_norms.append(float(norm))
                clock["train_time_s"] += time.perf_counter() - t0
                done = step + 1
                created = []
                if done % 10 == 0 or done == tcfg.max_iters:
                    bar.set_postfix(ntp=f"{float(model.loss_parts.get('ntp_loss', loss_value)):.3f}", lr=f"{lr:.2e}",
                                    val=f"{log[-1]['val_ntp_loss']:.3f}" if log else "-", refresh=False)
                bar.update(1)
                if done % tcfg.eval_interval == 0 or done == tcfg.max_iters:
                    row, last_row = log_row(done, grad_norms, full=done == tcfg.max_iters)
                    grad_norms = []
                    clock["elapsed_s"] = row["elapsed_s"] = time.perf_counter() - t_start
                    log.append(row)
                    if path:
                        _write_log(os.path.join(path, "log_data.csv"), log, columns)
                    if last_row is not None:
                        last_row["elapsed_s"] = row["elapsed_s"]
                        last_log.append(last_row)
                        if last_path:
                            _write_log(os.path.join(last_path, "log_data.csv"), last_log, columns)
                if save and done < tcfg.max_iters and (
                        stopping or (tcfg.checkpoint_interval and done % tcfg.checkpoint_interval == 0)):
                    clock["elapsed_s"] = time.perf_counter() - t_start
                    rngs = dist.gather(torch.get_rng_state())  # every process's dropout stream, for an exact resume
                    if path:
                        file = _checkpoint(path, done, model, opt, gen, {
                            "log": log, "grad_norms": grad_norms, "world": dist.world, "torch_rngs": rngs, **clock,
                            **({"ema": ema.state_dict()} if ema is not None else {}),
                            **({"last_log": last_log} if tcfg.ema_save_last else {})},
                            mcfg, tcfg)
                if stopping and done < tcfg.max_iters:
                    break
    except BaseException:
        bar.close()
        for folder in created:  # failed before its first step: leave no folder to block the name
            shutil.rmtree(folder, ignore_errors=True)
        raise
    bar.close()
    model.eval()
    judged.requires_grad_(True)  # the average is handed over as a model like any other
    run = Run(model=judged, model_cfg=mcfg, train_cfg=tcfg, log=log, path=path)
    if tcfg.ema_save_last:
        run.last = Run(model=model, model_cfg=mcfg, train_cfg=last_weights_config(tcfg), log=last_log, path=last_path,
                       stopped_at=done if done < tcfg.max_iters else None)
    if done < tcfg.max_iters:  # Ctrl-C: stopped cleanly after a completed step
        run.stopped_at = done
        if not dist.is_main:
            return run
        if path:
            run.resume_from = file
            print(f"\ninterrupted after step {done} of {tcfg.max_iters}: checkpoint saved to {file}, log so far in "
                  f"{os.path.join(path, 'log_data.csv')}. Continue with:\n  python train.py --resume={file}",
                  file=sys.stderr)
        else:
            print(f"\ninterrupted after step {done} of {tcfg.max_iters}: nothing is saved (save=False); "
                  "save_run(run) keeps the model as it is", file=sys.stderr)
        return run
    if path:
        tools.save_model(path, judged, mcfg, tcfg)
        _write_log(os.path.join(path, "log_data.csv"), log, columns)
    if last_path:
        tools.save_model(last_path, model, mcfg, run.last.train_cfg)
        _write_log(os.path.join(last_path, "log_data.csv"), last_log, columns)
    return run


AUTO_COMPILE_STEPS = 500  # measured: compiled CPU steps 1.18x (baseline) and 1.24x (FutureFormer) as fast,
# after 21 and 48 s of compiling (benchmarks/compile_speed.py): it pays from about 200-300 steps on


def will_compile(tcfg: TrainConfig, device: str) -> bool:
    """Whether train() compiles the model: TrainConfig.compile, or with None (auto) on CPU and CUDA for runs of
    at least AUTO_COMPILE_STEPS steps (never on MPS, where torch.compile is not dependable)."""
    if tcfg.compile is not None:
        return tcfg.compile
    return device in ("cpu", "cuda") and tcfg.max_iters >= AUTO_COMPILE_STEPS


def _first_compiled_forward(step_model, model, x, y, device, tcfg):
    """(the model to train with, the loss) of the first step's forward, which compiles (torch.compile works
    lazily). If compiling fails (no C++ compiler, an unsupported platform), warn and do the forward eagerly:
    the failure comes before anything ran, so the batch and the random numbers are those of an eager run."""
    import warnings

    rng = torch.get_rng_state()
    try:
        with tools.autocast(device, tcfg.precision), tools.quiet_compile():
            return step_model, step_model(x, y)[1]
    except Exception as e:  # torch._dynamo / inductor errors come in many kinds
        warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); training "
                      "eagerly. Pass --compile=false to skip compiling.", stacklevel=3)
        torch.set_rng_state(rng)
        with tools.autocast(device, tcfg.precision):
            return model, model(x, y)[1]


class NonFiniteError(FloatingPointError):
    """The loss or the gradient norm stopped being a number: training stops at that step, before the
    optimizer writes it into the weights."""

    def __init__(self, step, loss, norm, checkpoint, tcfg):
        where = (f"the last good checkpoint is {checkpoint} (python train.py --resume={checkpoint})" if checkpoint
                 else "there is no checkpoint to go back to")
        super().__init__(f"step {step}: the loss is {loss} and the gradient norm {norm}; training stopped before "
                         f"the step reached the weights, and nothing non-finite is saved; {where}. Try a lower "
                         f"lr_max (now {tcfg.lr_max}) or grad_clip (now {tcfg.grad_clip})")
        self.step, self.checkpoint = step, checkpoint


class _StopFlag:
    """Ctrl-C (SIGINT) during training sets the flag instead of interrupting: the loop finishes its step,
    checkpoints and stops. A second Ctrl-C interrupts at once. Only in the main thread (signals are delivered
    there); elsewhere Ctrl-C keeps its usual effect."""

    def __init__(self):
        self.set, self._old = False, None

    def __bool__(self):
        return self.set

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        print("\nCtrl-C: stopping after this step (press again to stop at once)", file=sys.stderr)

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


# ---------------------------------------------------------------- equal compute, seeds


def run_flops(name: str, trained_dir: str | None = None) -> float:
    """The training FLOPs of a saved run: its log's last `flops`, or (for logs that predate the column) its
    training tokens x flops_per_token of its config."""
    log = tools.read_log(name, trained_dir)
    if log.empty:
        raise ValueError(f"run {name!r} has an empty log_data.csv: it never reached an evaluation")
    last = log.iloc[-1]
    if "flops" in log.columns:
        return float(last["flops"])
    return float(last["tokens"]) * flops_per_token(tools.load_configs(name, trained_dir)[0])


def match_flops(mcfg: ModelConfig, tcfg: TrainConfig, reference: str, trained_dir: str | None = None,
                processes: int | None = None) -> TrainConfig:
    """`tcfg` with max_iters set so that training `mcfg` costs the training FLOPs of the saved run `reference`
    (rounded to the nearest step, so within half a step's FLOPs); the derived parts of the learning-rate
    schedule (warm-up, flat end) follow the new length. How a baseline gets a FutureFormer's compute. A step
    takes the global batch: batch_size x grad_accum_steps x `processes` sequences (default: torchrun's
    WORLD_SIZE, else 1)."""
    target = run_flops(reference, trained_dir)
    processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
    per_step = flops_per_token(mcfg) * tcfg.batch_size * tcfg.grad_accum_steps * processes * mcfg.max_seq_len
    return replace(tcfg, max_iters=max(1, round(target / per_step)))


def seed_names(base: str, seeds: list[int]) -> list[str]:
    return [f"{base}_s{seed}" for seed in seeds]


def train_seeds(model_cfg: ModelConfig, train_cfg: TrainConfig, seeds, *, trained_dir: str | None = None,
                data: tools.TokenData | None = None, progress: bool = True) -> list[Run]:
    """Train the same configuration once per seed, one after another, as NAME_s<seed>, each recording
    group=NAME (NAME = train_cfg.model_name, or the default name), so that model_comparison treats them as one
    group. Every folder name is checked before the first run starts."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds} is not allowed: give distinct seeds, e.g. 0,1,2")
    base = train_cfg.model_name or default_name(model_cfg, Model(model_cfg).num_params())
    root = trained_dir or tools.TRAINED_DIR
    first = int(os.environ.get("RANK", "0")) == 0  # under torchrun the first process checks (and torchrun stops all)
    names = seed_names(base, seeds)
    if train_cfg.ema_save_last:  # the last weights' twins too (G_last_s<seed>)
        names += [last_weights_config(replace(train_cfg, seed=s, model_name=n, group=base)).model_name
                  for s, n in zip(seeds, seed_names(base, seeds))]
    taken = [n for n in names if first and os.path.exists(os.path.join(root, n))]
    if taken:
        raise FileExistsError(f"{', '.join(os.path.join(root, n) for n in taken)} already exist(s) and runs are "
                              "never overwritten: choose another model_name")
    data = data if data is not None else tools.get_data(model_cfg, train_cfg)
    runs = []
    for seed, name in zip(seeds, seed_names(base, seeds)):
        tcfg = replace(train_cfg, seed=seed, model_name=name, group=base)
        runs.append(train(model_cfg, tcfg, trained_dir=trained_dir, data=data, progress=progress))
        if runs[-1].stopped_at is not None:  # Ctrl-C: the seeds after this one are not started
            break
    return runs


# ---------------------------------------------------------------- command line


OPTIONS = {  # train.py's options that are not config fields, for --help
    "--trained_dir=PATH": "where run folders go (default: trained/)",
    "--resume=CHECKPOINT": "continue a run from trained/NAME/checkpoints/step_*.pt, with its configs",
    "--seeds=0,1,2": "train once per seed, as NAME_s0, NAME_s1, ... (recorded as the group NAME)",
    "--match_flops=RUN": "set max_iters so that training costs RUN's training FLOPs",
    "-h, --help": "this list",
}


def usage() -> str:
    from config import format_help

    return ("usage: python train.py [--key=value ...]\n\n"
            "Train a model and save it to trained/<model_name>/. Every --key=value is a field of ModelConfig or "
            "TrainConfig\n(config.py; a bool field may be given bare, --compile). Offline, e.g.:\n"
            "  python train.py --data_path=../shared/data/tinystories_sample.txt "
            "--val_data_path=../shared/data/tinystories_valid_sample.txt --model_name=my_run\n\n"
            + format_help(ModelConfig, TrainConfig, extra=OPTIONS))


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(usage())
        return 0
    try:
        (m_over, t_over), extra = parse_overrides(argv, ModelConfig, TrainConfig,
                                                  extra={"trained_dir": str, "resume": str, "seeds": str,
                                                         "match_flops": str})
        if extra.get("resume"):
            if m_over or t_over or extra.get("seeds") or extra.get("match_flops"):
                raise ValueError("--resume continues a run with the configs of its checkpoint; drop the other "
                                 f"settings ({sorted(m_over) + sorted(t_over) + sorted(set(extra) - {'resume'})})")
            mcfg = tcfg = None
        else:
            mcfg, tcfg = ModelConfig(**m_over), TrainConfig(**t_over)
        seeds = None
        if extra.get("seeds") is not None:
            if "seed" in t_over:
                raise ValueError("--seeds trains one run per seed: drop --seed")
            try:
                seeds = [int(s) for s in extra["seeds"].split(",") if s.strip()]
            except ValueError:
                raise ValueError(f"--seeds={extra['seeds']!r} is not allowed: write seeds as --seeds=0,1,2") from None
        if extra.get("match_flops"):
            if "max_iters" in t_over:
                raise ValueError("--match_flops sets max_iters from the reference run's FLOPs: drop --max_iters")
            tcfg = match_flops(mcfg, tcfg, extra["match_flops"], extra.get("trained_dir"))
            print(f"--match_flops={extra['match_flops']}: {tcfg.max_iters} steps "
                  f"({run_flops(extra['match_flops'], extra.get('trained_dir')):.4g} FLOPs)")
    except (ValueError, FileNotFoundError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    try:
        if seeds is not None:
            runs = train_seeds(mcfg, tcfg, seeds, trained_dir=extra.get("trained_dir"))
        else:
            runs = [train(mcfg, tcfg, trained_dir=extra.get("trained_dir"), resume=extra.get("resume"))]
    except (tools.DataSourceError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    if runs[-1].stopped_at is not None:
        return 130  # interrupted: train() said where the checkpoint is and how to resume
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, the first process reports
    for run, what in [(r, w) for one in runs for r, w in ((one, ""), (one.last, "the last weights ")) if r]:
        last = run.log[-1]
        print(f"saved {what}to {run.path}\nvalidation (whole validation split): NTP loss {last['val_ntp_loss']:.4f}, "
              f"{last['val_bpb']:.4f} bits per byte, perplexity {last['val_ppl']:.2f}; "
              f"{last['tokens_per_s']:,.0f} training tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
