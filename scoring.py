"""Scoring a model on text: the log's estimates during training (`estimate`, a fixed sample of batches), the whole
validation split at the end of a run (`evaluate_split`), and bits per byte. Always in fp32, whatever the training
precision."""

import functools
import hashlib
import io
import json
import math
import os

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from batches import eval_batches, get_batch
from config import ModelConfig, TrainConfig, from_dict, replace, to_dict
from data import SPLITS, bits_per_byte, get_data
from dist import Dist
from files import file_hash, first_line, write_atomically
from hardware import pick_device
from modules.model import Model
from runs import load_configs, load_model, read_log, run_path


def loss_metrics(parts: dict, prefix: str, bytes_per_token: float) -> dict:
    """A log row's columns for one split from the model's loss parts: {prefix}_loss (the total), _ntp_loss, _bpb, _ppl,
    and the future-sight parts as they are."""
    ntp = float(parts["ntp_loss"])
    out = {f"{prefix}_loss": float(parts.get("total_loss", ntp)), f"{prefix}_ntp_loss": ntp,
           f"{prefix}_bpb": bits_per_byte(ntp, bytes_per_token),
           f"{prefix}_ppl": math.exp(min(ntp, 80.0))}
    out.update({f"{prefix}_{k}": float(v) for k, v in parts.items() if k.startswith("fs_")})
    return out


@torch.no_grad()
def estimate(model, data, mcfg: ModelConfig, tcfg: TrainConfig, device: str, splits=SPLITS,
             dist: Dist | None = None) -> dict:
    """Mean loss parts over `eval_samples` batches of each split: the same batches at every evaluation
    (a generator seeded from the run's seed), so the curves move with the model, not with the sample. Under
    torchrun each process evaluates every world-th batch and the sums are added up."""
    dist = dist or Dist()
    out = {}
    for i, split in enumerate(SPLITS):
        if split not in splits:
            continue
        gen = torch.Generator().manual_seed(tcfg.seed + 1_000_003 * (i + 1))
        sums = {}
        for b in range(tcfg.eval_samples):
            x, y = get_batch(data, split, tcfg.batch_size, mcfg.max_seq_len, mcfg.lookahead, gen)
            if b % dist.world != dist.rank:
                continue
            model(x.to(device), y.to(device))  # evaluation in fp32, whatever the training precision
            for k, v in model.loss_parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        keys = sorted(set().union(*dist.gather(sorted(sums))))  # every process adds the same parts, in one order
        sums = dict(zip(keys, dist.sum([sums.get(k, 0.0) for k in keys])))
        parts = {k: v / tcfg.eval_samples for k, v in sums.items()}
        out.update(loss_metrics(parts, split, data.meta[split]["bytes_per_token"]))
    return out


@torch.no_grad()
def evaluate_split(model, data, split: str, mcfg: ModelConfig, batch_size: int, device: str,
                   tcfg: TrainConfig | None = None, dist: Dist | None = None) -> dict:
    """Loss parts over the whole split in fixed, non-overlapping windows (eval_batches): every
    token of the split is a next-token target exactly once. Each batch's mean is weighted by its real
    (non-pad) targets, so `ntp_loss` is the exact mean over the split; the fs parts are weighted the
    same way. Deterministic: anyone can recompute it from the saved model. Under torchrun each process takes
    every world-th batch and the weighted sums are added up."""
    dist = dist or Dist()
    sums, count = {}, 0
    for b, (x, y) in enumerate(eval_batches(data, split, batch_size, mcfg.max_seq_len, mcfg.lookahead)):
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


# ---------------------------------------------------------------- scores cached in the run folder (<run>/scores/)


SCORES_VERSION = 1  # bump when score_windows changes what it stores: cached scores are then recomputed




class NoWeights:
    """A run committed without its model.pth: its config, and scores cached in its folder (see cached_scores)."""

    def __init__(self, cfg):
        self.cfg = cfg


def cached_scores(name, trained_dir, model, inputs, targets, topk, score) -> dict:
    """The per-window scores of a saved run, `score()` (scoring.score_windows on these windows), kept in
    <run>/scores/ (git-ignored unless committed with the run): one file per set of windows (a hash of their tokens,
    which fixes the validation text, tokenizer, window length and selection) and topk, holding the hash of the
    model.pth it scored. Scoring twenty runs again costs nothing; a retrained run (another model.pth) is scored
    afresh; and a run committed with its scores but without its weights (to keep a clone small) is compared from
    its scores alone (model: a NoWeights)."""
    run = run_path(name, trained_dir)
    folder = os.path.join(run, "scores")
    key = hashlib.sha256(json.dumps([SCORES_VERSION, hashlib.sha256(inputs.numpy().tobytes()).hexdigest(),
                                     hashlib.sha256(targets.numpy().tobytes()).hexdigest(),
                                     list(topk)]).encode()).hexdigest()[:20]
    path = os.path.join(folder, f"{key}.npz")
    weights = os.path.join(run, "model.pth")
    current = file_hash(weights) if os.path.isfile(weights) else None
    damaged = None
    if os.path.isfile(path):
        try:
            scored, cached = read_scores(path, model.cfg, len(inputs), topk)
            if current is None or scored == current:
                return cached
        except ValueError as e:  # damaged (e.g. cut short): score again and replace it
            damaged = str(e)
    if isinstance(model, NoWeights):
        raise FileNotFoundError(damaged or f"{name} has no model.pth and no scores for these windows in {folder}: "
                                "compare it on the windows it was scored on (its own validation text), or restore "
                                "its weights")
    scores = score()
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()  # a file object: np.savez would append .npz to a name
    np.savez(buf, weights_sha256=current, **scores)
    write_atomically(path, buf.getvalue())
    return scores


def read_scores(path: str, mcfg: ModelConfig, windows: int, topk) -> tuple[str, dict]:
    """(sha256 of the weights scored, scores) of a file `cached_scores` wrote, checked against what `score_windows`
    gives for this model, these windows and topk: every array present, one number per window. Anything else
    (a file cut short, a byte changed: zip checks its CRC-32, a foreign file) is a ValueError naming it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
            scored = str(f["weights_sha256"]) if "weights_sha256" in files else ""
            cached = {k: f[k] if f[k].ndim else float(f[k]) for k in files if k != "weights_sha256"}
    except Exception as e:  # BadZipFile, EOFError, OSError, ValueError: whatever a damaged file makes numpy raise
        raise ValueError(f"the cached scores {path} are not readable ({first_line(e)})") from None
    per_window = ["nll", "targets", *(f"top{k}" for k in topk),
                  *(f"{x}_{k}" for k in range(1, mcfg.fs_periods + 1) for x in ("fs_cos", "fs_n"))]
    numbers = [f"fs_loss_{k}" for k in range(1, mcfg.fs_periods + 1)]
    if set(cached) != set(per_window + numbers) or any(
            np.shape(cached[k]) != (windows,) or not np.issubdtype(np.asarray(cached[k]).dtype, np.number)
            for k in per_window):
        raise ValueError(f"the cached scores {path} are not the scores of these windows (other arrays or lengths)")
    return scored, cached


# ---------------------------------------------------------------- teacher-forced scores of fixed windows


def validation_windows(data, seq_len: int, lookahead: int = 1, num_sequences: int | None = None,
                       split: str = "val"):
    """(inputs (N, T), targets (N, T + H - 1)): fixed windows of a split, from eval_batches.

    The split is cut into consecutive windows of seq_len tokens (the last one padded with pad_id); with
    num_sequences set, that many are kept, evenly spaced over the whole split (so they come from many
    stories, not just the first ones); None keeps them all. Deterministic: the same data and seq_len give
    the same windows, whatever the model (a larger lookahead only adds target columns).
    """
    stream = data.split(split)
    total = len(range(0, len(stream) - 1, seq_len))  # the windows eval_batches yields
    if num_sequences is not None and num_sequences < 1:
        raise ValueError(f"num_sequences={num_sequences!r} is not allowed: an int >= 1 or None (the whole split)")
    keep = np.arange(total) if num_sequences is None or num_sequences >= total else (
        np.arange(num_sequences) * total // num_sequences)
    inputs, targets, first = [], [], 0
    for x, y in eval_batches(data, split, 1024, seq_len, lookahead):
        rows = keep[(keep >= first) & (keep < first + len(x))] - first
        inputs.append(x[rows])
        targets.append(y[rows])
        first += len(x)
    return torch.cat(inputs), torch.cat(targets)


def _fingerprint(inputs) -> str:
    """A short hash of the evaluated windows: equal for two models iff they read the same tokens."""
    return hashlib.sha1(inputs.numpy().astype(np.int64).tobytes()).hexdigest()[:12]


@torch.no_grad()
def score_windows(model, inputs, targets, pad_id: int, topk=(1, 5), batch_size: int = 16) -> dict:
    """A teacher-forced pass over fixed windows, kept window by window so that runs can be compared pairwise.

    inputs (W, T), targets (W, >= T + H - 1) as from `validation_windows`. Returns numpy arrays of length W:
    nll (summed next-token loss in nats over the window's real targets), targets (how many real targets),
    top{k} (how many of them were among the model's k best guesses); for FutureFormers, per future chunk k:
    fs_cos_{k} (summed cosine between the chunk's prediction and its target) and fs_n_{k} (how many chunks the
    loss counts); and fs_loss_{k}, one number: the model's own future-sight loss averaged over those chunks.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    W, T = inputs.shape
    P, H, kmax = model.cfg.fs_periods, model.cfg.lookahead, max(topk)
    out = {"nll": np.zeros(W), "targets": np.zeros(W), **{f"top{k}": np.zeros(W) for k in topk}}
    fs_loss = np.zeros(P)
    for k in range(1, P + 1):
        out[f"fs_cos_{k}"], out[f"fs_n_{k}"] = np.zeros(W), np.zeros(W)
    try:
        for i in range(0, W, batch_size):
            x, y = inputs[i:i + batch_size].to(device), targets[i:i + batch_size, :T + H - 1].to(device)
            rows = slice(i, i + len(x))
            logits, _ = model(x, y)                                                 # (B, T, V)
            yt = y[:, :T]                                                           # (B, T)
            real = yt != pad_id
            nll = F.cross_entropy(logits.float().flatten(0, 1), yt.flatten(), ignore_index=pad_id,
                                  reduction="none").view_as(yt)                     # (B, T), 0 at pad
            out["nll"][rows] = nll.double().sum(1).cpu().numpy()
            out["targets"][rows] = real.sum(1).cpu().numpy()
            hits = logits.topk(kmax, dim=-1).indices == yt[..., None]               # (B, T, kmax)
            for k in topk:
                out[f"top{k}"][rows] = (hits[..., :k].any(-1) & real).sum(1).cpu().numpy()
            vectors = model.loss_fn.target_vectors(y, T, model.embedding) if P else []
            for k, (target, valid) in enumerate(vectors, start=1):
                cos = F.cosine_similarity(model.future[k].float(), target.float(), dim=-1).mean(-1)  # (B, T)
                out[f"fs_cos_{k}"][rows] = (cos * valid).sum(1).cpu().numpy()
                out[f"fs_n_{k}"][rows] = valid.sum(1).cpu().numpy()
                fs_loss[k - 1] += float(model.loss_parts[f"fs_loss_{k}"]) * float(valid.sum())  # a masked mean
    finally:
        model.train(was_training)
    for k in range(1, P + 1):
        n = out[f"fs_n_{k}"].sum()
        out[f"fs_loss_{k}"] = fs_loss[k - 1] / n if n else float("nan")
    return out


def _eval_data(name: str, trained_dir, mcfg, val_data_path: str | None):
    """The data a run is scored on: its own validation split, or the text file `val_data_path` (tokenized with
    the run's tokenizer; the file stands in for both splits, only its validation split is read)."""
    _, tcfg = load_configs(name, trained_dir)
    if val_data_path is not None:
        tcfg = replace(tcfg, data_path=val_data_path, val_data_path=val_data_path)
    return get_data(mcfg, tcfg)


def _entries(models, trained_dir, data, device, val_data_path=None):
    """[(label, model, data, run name or None)] for names, Model objects, or a dict label -> either."""
    if isinstance(models, (str, torch.nn.Module)):
        models = [models]
    items = list(models.items()) if isinstance(models, dict) else [
        (m if isinstance(m, str) else f"model_{i}", m) for i, m in enumerate(models)]
    if not items:
        raise ValueError("no models to evaluate")
    labels = [label for label, _ in items]
    if len(set(labels)) < len(labels):
        raise ValueError(f"models {labels} are named more than once: give each a label, e.g. a dict label -> model")
    if data is not None and val_data_path is not None:
        raise ValueError("pass data= or val_data_path=, not both")
    out = []
    for label, m in items:
        d, name = data, None
        if isinstance(m, str):
            name = m
            if os.path.isfile(os.path.join(run_path(name, trained_dir), "model.pth")):
                m, _, mcfg = load_model(name, trained_dir, device)
            else:  # committed without weights: its cached scores stand in for it (see cached_scores)
                mcfg = load_configs(name, trained_dir)[0]
                m = NoWeights(mcfg)
            if d is None:
                d = _eval_data(name, trained_dir, mcfg, val_data_path)
        elif d is None and val_data_path is not None:
            d = get_data(m.cfg, TrainConfig(data_path=val_data_path, val_data_path=val_data_path))
        elif d is None:
            raise ValueError(f"{label}: a model given as an object needs data=get_data(model_cfg, train_cfg) "
                             "or val_data_path= to evaluate on (a run given by name brings its own)")
        info = d.meta["tokenizer"]
        if (info["name"], info["vocab_len"]) != (m.cfg.tokenizer, m.cfg.vocab_len):
            raise ValueError(f"{label}: the model uses tokenizer {m.cfg.tokenizer} {m.cfg.vocab_len} but the data "
                             f"was tokenized with {info['name']} {info['vocab_len']}")
        out.append((label, m, d, name))
    return out


def window_scores(models, num_sequences: int | None = None, seq_len: int | None = None, topk=(1, 5),
                  trained_dir: str | None = None, data=None, batch_size: int = 16, split: str = "val",
                  device: str = "auto", val_data_path: str | None = None) -> tuple[dict, dict]:
    """({label: score_windows(...)}, {label: {"windows", "bytes_per_token", "data"}}): every model scored window
    by window on fixed windows of the validation split (see `evaluate` for the arguments). Runs given by name
    are cached in their folder (`cached_scores`). Models that share a tokenizer, window length and validation
    text read exactly the same windows (equal "windows" fingerprints), so they can be compared pairwise."""
    topk = tuple(sorted(set(topk)))
    entries = _entries(models, trained_dir, data, device, val_data_path)
    if seq_len is None:
        seq_len = min(m.cfg.max_seq_len for _, m, _, _ in entries)
    scores, info, windows = {}, {}, {}
    for label, model, d, name in entries:
        if seq_len > model.cfg.max_seq_len:
            raise ValueError(f"seq_len={seq_len} is not allowed: {label} has max_seq_len={model.cfg.max_seq_len}")
        key = d.path or id(d)
        if key not in windows:  # one set of windows per data source, with the look-ahead of the longest-sighted
            lookahead = max(m.cfg.lookahead for _, m, d2, _ in entries if (d2.path or id(d2)) == key)
            windows[key] = validation_windows(d, seq_len, lookahead, num_sequences, split)
        inputs, targets = windows[key]
        targets = targets[:, :seq_len + model.cfg.lookahead - 1]  # what this model reads: cache keys stay its own
        if name is not None:
            scores[label] = cached_scores(name, trained_dir, model, inputs, targets, topk, functools.partial(
                score_windows, model, inputs, targets, d.pad_id, topk, batch_size))
        else:
            scores[label] = score_windows(model, inputs, targets, d.pad_id, topk, batch_size)
        info[label] = {"windows": _fingerprint(inputs), "bytes_per_token": d.meta[split]["bytes_per_token"],
                       "data": d}
    return scores, info


def evaluate(models, num_sequences: int | None = None, seq_len: int | None = None, topk=(1, 5),
             trained_dir: str | None = None, data=None, batch_size: int = 16, split: str = "val",
             device: str = "auto", val_data_path: str | None = None) -> pd.DataFrame:
    """Teacher-forced next-token evaluation on fixed validation windows; one row per model.

    models: run names, Model objects (then pass `data` or `val_data_path`), or a dict label -> either. Runs
        given by name are loaded onto `device` and evaluated on their own training data's validation split,
        or on the text file `val_data_path` (e.g. VALID_SAMPLE_PATH, the official validation text).
    num_sequences: None (default) = every window of the split; a number keeps that many windows of seq_len
        tokens, evenly spaced over the split. seq_len: None = the shortest max_seq_len among the models, so all
        read the same windows.
    Every real (non-pad) next-token target weighs the same, whichever window or batch it is in.
    Columns: sequences, targets (real targets scored), ntp_loss (nats per token), bpb (bits per byte, from
    the split's bytes_per_token), ppl, top{k}_acc for each k of topk, and for FutureFormers, per future
    chunk k: fs_cos_k (mean cosine between the chunk's prediction and its target, over the chunks the loss
    counts) and fs_loss_k (the model's own future-sight loss); windows (a hash of the tokens read: equal
    hashes = the same windows). `window_scores` gives the same window by window; `compare` adds intervals.
    """
    topk = tuple(sorted(set(topk)))
    scores, info = window_scores(models, num_sequences, seq_len, topk, trained_dir, data, batch_size, split, device,
                                 val_data_path)
    rows = {}
    for label, s in scores.items():
        n = s["targets"].sum()
        loss = float(s["nll"].sum() / n)
        rows[label] = {"sequences": len(s["nll"]), "targets": int(n), "ntp_loss": loss,
                       "bpb": bits_per_byte(loss, info[label]["bytes_per_token"]),
                       "ppl": math.exp(loss) if loss < 700 else math.inf,
                       **{f"top{k}_acc": float(s[f"top{k}"].sum() / n) for k in topk}}
        k = 1
        while f"fs_n_{k}" in s:
            m = s[f"fs_n_{k}"].sum()
            rows[label][f"fs_cos_{k}"] = float(s[f"fs_cos_{k}"].sum() / m) if m else float("nan")
            rows[label][f"fs_loss_{k}"] = float(s[f"fs_loss_{k}"])
            k += 1
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["windows"] = [info[label]["windows"] for label in scores]
    table.index.name = "model"
    return table


def checkpoint_scores(names, trained_dir: str | None = None, val_data_path: str | None = None, batch_size: int = 16,
                      device: str = "auto") -> pd.DataFrame:
    """Each run's checkpoints and final weights scored on every window of the validation split: where along
    training a run validates best. The logged curves are estimates on a few batches; this is the whole split.

    names: runs trained with --checkpoint_interval=N (their checkpoints/step_*.pt). A run trained with
    ema_decay keeps its moving average in each checkpoint, so each step gives two rows: "last" (the training
    weights) and "average". The final row is the run's model.pth: the average for an averaged run (its last
    weights are the twin run NAME_last, with ema_save_last). val_data_path: as in `evaluate`, e.g.
    VALID_SAMPLE_PATH, the official validation text.
    Columns: run, step, weights ("last" or "average"), ntp_loss, bpb; sorted by run, weights and step.
    """
    from runs import checkpoint_files, load_checkpoint

    rows = []
    for name in [names] if isinstance(names, str) else names:
        path = run_path(name, trained_dir)
        mcfg, tcfg = load_configs(name, trained_dir)
        files = checkpoint_files(path)
        if not files:
            raise ValueError(f"{path} has no checkpoints to score: train it with --checkpoint_interval=N (each "
                             "checkpoint keeps the weights of its step, and the moving average with --ema_decay)")
        models, where = {}, pick_device(device)
        for file in files:
            ckpt = load_checkpoint(file)
            theirs = from_dict(TrainConfig, ckpt["train_config"])  # a run's identity: its model, seed, start time
            if to_dict(from_dict(ModelConfig, ckpt["model_config"])) != to_dict(mcfg) or any(
                    None not in (getattr(theirs, k), getattr(tcfg, k)) and getattr(theirs, k) != getattr(tcfg, k)
                    for k in ("seed", "started")):
                raise ValueError(f"{file} is not a checkpoint of the run {name} (its config, seed or start time "
                                 f"differ): move it out of {os.path.dirname(file)}")
            for kind, state in (("last", ckpt["model"]), ("average", ckpt.get("ema", {}).get("weights"))):
                if state is not None:
                    model = Model(mcfg)
                    model.load_state_dict(state)
                    models[(ckpt["step"], kind)] = model.to(where).eval()
        if os.path.isfile(os.path.join(path, "model.pth")):
            step = int(read_log(path)["step"].iloc[-1])
            models[(step, "average" if tcfg.ema_decay else "last")] = load_model(name, trained_dir, device)[0]
        data = _eval_data(name, trained_dir, mcfg, val_data_path)
        labels = {key: f"{name}@{key[0]}:{key[1]}" for key in models}
        ev = evaluate({labels[key]: m for key, m in models.items()}, data=data, batch_size=batch_size, topk=(1,))
        rows += [{"run": name, "step": step, "weights": kind, "ntp_loss": float(ev.loc[labels[step, kind], "ntp_loss"]),
                  "bpb": float(ev.loc[labels[step, kind], "bpb"])} for step, kind in models]
    table = pd.DataFrame(rows).sort_values(["run", "weights", "step"], kind="stable").reset_index(drop=True)
    return table
