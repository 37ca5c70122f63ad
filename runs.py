"""The run folder, trained/<name>/: creating, reserving, logging, checkpointing, saving, loading and naming runs,
and the per-window scores cached beside them. Every file a run writes or reads goes through here.

    model.pth            the state dict (load with weights_only=True: plain tensors, no pickled code)
    model_config.json    every ModelConfig field, derived ones included
    train_config.json    every TrainConfig field
    log_data.csv         one row per evaluation, columns `log_columns(model_cfg)`
    checkpoints/         periodic checkpoints, step_<step>.pt (git-ignored)
    scores/              per-window validation scores (`cached_scores`; git-ignored unless committed with the run)

The format is described in docs/design.md §7.
"""

import csv
import hashlib
import io
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field

import torch

from config import RESUMABLE_FIELDS, VOCAB_FS_LOSSES, ModelConfig, TrainConfig, from_dict, replace, to_dict
from data import SPLITS, get_data, get_tokenizer, read_validation_text, tokenizer_fingerprint
from files import (  # noqa: F401  (runs.read_json, runs.DiskFullError, ...: the run folder's own I/O)
    MAX_CONFIG_BYTES,
    MAX_JSON_DEPTH,
    DiskFullError,
    file_hash,
    first_line,
    free_bytes,
    human_size,
    json_bytes,
    json_depth,
    read_json,
    read_torch_file,
    replace_atomically,
    torch_bytes,
    write_atomically,
)
from hardware import pick_device
from modules.flops import flops_per_token
from modules.model import Model

REPO_DIR = os.path.dirname(os.path.abspath(__file__))

TRAINED_DIR = os.path.join(REPO_DIR, "trained")
RUN_FILES = ("model.pth", "model_config.json", "train_config.json", "log_data.csv")  # what every saved run has
FINGERPRINT = "model_fingerprint.json"  # beside model.pth: its sha256, and the config and tokenizer it was trained on
SAVED_FILES = (*RUN_FILES, FINGERPRINT)  # what a run saved now has (runs saved before fingerprints: RUN_FILES)


def runs_folder(trained_dir: str | None = None) -> str:
    """The folder of run folders: `trained_dir`, or by default the repository's trained/."""
    return trained_dir or TRAINED_DIR


def list_runs(trained_dir: str | None = None) -> list[str]:
    """Names of the run folders in `trained_dir` (default trained/) that hold a model, sorted."""
    root = runs_folder(trained_dir)
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root)
                  if os.path.isfile(os.path.join(root, d, "model_config.json"))
                  and os.path.isfile(os.path.join(root, d, "model.pth")))


def run_path(name: str, trained_dir: str | None = None) -> str:
    """The folder of run `name` (or `name` itself when it is a path to a run folder); a missing run
    is a FileNotFoundError that lists the runs there and the near matches."""
    import difflib

    if os.path.isfile(os.path.join(name, "model_config.json")):
        return name
    root = runs_folder(trained_dir)
    path = os.path.join(root, name)
    if os.path.isfile(os.path.join(path, "model_config.json")):
        return path
    runs = list_runs(root)
    near = difflib.get_close_matches(name, runs, n=3, cutoff=0.4)
    hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    raise FileNotFoundError(f"no trained model {name!r} in {root}.{hint} Runs there: {runs or 'none yet'}")


def cpu_state(model) -> dict:
    """A model's weights and buffers as detached CPU tensors, ready for torch.save (a compiled model's plain ones)."""
    model = getattr(model, "_orig_mod", model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def non_finite(state: dict) -> list[str]:
    """The names of the floating-point tensors of `state` that hold a NaN or an infinity."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]


def _names(keys: list[str]) -> str:
    return f"{', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"


def check_finite(state: dict, what: str) -> None:
    """Refuse to save weights that are not all finite: a NaN written to disk is a run lost."""
    bad = non_finite(state)
    if bad:
        raise FloatingPointError(f"not saving {what}: {len(bad)} tensor(s) hold NaN or infinite values "
                                 f"({_names(bad)})")




def save_configs(path: str, mcfg, tcfg) -> None:
    """Write model_config.json and train_config.json into the run folder `path` (created if needed)."""
    os.makedirs(path, exist_ok=True)
    for fname, cfg in (("model_config.json", mcfg), ("train_config.json", tcfg)):
        write_atomically(os.path.join(path, fname), json_bytes(to_dict(cfg)))


# Fields that change training only, never what trained weights compute (eval mode: logits, predictions, losses
# unweighted): editing them in model_config.json after training is allowed.
TRAINING_ONLY_FIELDS = ("dropout_rate", "fs_loss_lambda", "fs_lambda_schedule", "fs_lambda_end", "fs_detach_targets")


def save_model(path: str, model, mcfg, tcfg) -> None:
    """Write model.pth and both configs into the run folder `path` (created if needed), and beside model.pth its
    fingerprint (model_fingerprint.json: the file's sha256, the ModelConfig it was trained with and its tokenizer's
    fingerprint, which `load_model` checks). model.pth stays a plain state dict of tensors. Weights that are not all
    finite are refused (FloatingPointError) and nothing is written. Each file is written whole, read back and checked
    (`write_atomically`) before the next."""
    state = cpu_state(model)
    check_finite(state, os.path.join(path, "model.pth"))
    save_configs(path, mcfg, tcfg)
    data = torch_bytes(state)
    fingerprint = os.path.join(path, FINGERPRINT)
    if os.path.exists(fingerprint):  # it describes the model.pth about to be replaced
        os.remove(fingerprint)
    write_atomically(os.path.join(path, "model.pth"), data)
    try:
        tokenizer = tokenizer_fingerprint(get_tokenizer(mcfg.tokenizer, mcfg.vocab_len), mcfg.tokenizer, mcfg.vocab_len)
    except (ValueError, OSError):  # a tokenizer that does not load here: the weights are saved all the same
        tokenizer = None
    write_atomically(fingerprint, json_bytes({"weights_sha256": hashlib.sha256(data).hexdigest(),
                                               "tokenizer_fingerprint": tokenizer, "model_config": to_dict(mcfg)}))






def load_configs(name: str, trained_dir: str | None = None):
    """(ModelConfig, TrainConfig) of a saved run; a missing, damaged or invalid config file is an error that
    names the file."""
    path = run_path(name, trained_dir)
    out = []
    for fname, cls in (("model_config.json", ModelConfig), ("train_config.json", TrainConfig)):
        file = os.path.join(path, fname)
        values = read_json(file, f"{cls.__name__} ({fname})")
        try:
            out.append(from_dict(cls, values))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{file}: {e}") from None
    return tuple(out)


def load_model(name: str, trained_dir: str | None = None, device: str = "cpu"):
    """(model, tokenizer, model_config) of the run trained/<name>/ (or a run folder's path), in eval mode
    on `device`. The weights load with weights_only=True: a state dict of tensors, no pickled code. Refused, with
    a ValueError naming the file: a damaged or cut-short model.pth (`read_torch_file`), a model_config.json edited
    since training in a field that changes what the model computes, weights replaced since training, weights of
    another shape, and weights that are not all finite (`check_fingerprint`, `check_weights`)."""
    path = run_path(name, trained_dir)
    mcfg, _ = load_configs(path)
    file = os.path.join(path, "model.pth")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file} is missing: the run has no saved weights (did it finish?)")
    fingerprint = read_fingerprint(path)
    check_fingerprint(fingerprint, mcfg, path)  # before anything is built from the config
    state = read_torch_file(file, "model file", "train the run again or restore the file")
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{file} is not a state dict of tensors")
    with torch.device("meta"):  # the shapes the config gives, without allocating them
        expected = Model(mcfg).state_dict()
    check_weights(state, expected, file)
    bad = non_finite(state)
    if bad:
        raise ValueError(f"{file} holds NaN or infinite values in {len(bad)} tensor(s) ({_names(bad)}): these weights "
                         "cannot generate or be scored; restore the file or train the run again")
    if fingerprint is not None and file_hash(file) != fingerprint["weights_sha256"]:
        raise ValueError(f"{file} is not the file that was saved with this run: its sha256 differs from the one "
                         f"{FINGERPRINT} recorded at training, so the weights were replaced since; restore them (or, "
                         f"if you replaced them on purpose with weights of this configuration, delete {FINGERPRINT})")
    tokenizer = get_tokenizer(mcfg.tokenizer, mcfg.vocab_len)
    if fingerprint is not None and fingerprint.get("tokenizer_fingerprint") not in (
            None, tokenizer_fingerprint(tokenizer, mcfg.tokenizer, mcfg.vocab_len)):
        raise ValueError(f"the tokenizer {mcfg.tokenizer} of size {mcfg.vocab_len} is not the one {file} was trained "
                         f"with (its fingerprint differs from {FINGERPRINT}'s): it was rebuilt or replaced since; "
                         f"restore tokenizers/{mcfg.tokenizer}/models/{mcfg.vocab_len}.json")
    model = Model(mcfg)
    model.load_state_dict(state)
    model.to(pick_device(device)).eval()
    return model, tokenizer, mcfg


def read_fingerprint(path: str) -> dict | None:
    """The run folder's model_fingerprint.json (see `save_model`), checked; None for a run saved before
    fingerprints existed."""
    file = os.path.join(path, FINGERPRINT)
    if not os.path.isfile(file):
        return None
    fp = read_json(file, "weights fingerprint")
    if not isinstance(fp.get("weights_sha256"), str) or not isinstance(fp.get("model_config"), dict):
        raise ValueError(f"{file} is not a weights fingerprint (weights_sha256, model_config): a damaged file; "
                         "restore it, or delete it to load the weights unchecked")
    try:
        fp["model_config"] = to_dict(from_dict(ModelConfig, fp["model_config"]))  # fields added since: defaults
    except (ValueError, TypeError) as e:
        raise ValueError(f"{file}: {e}") from None
    return fp


def check_fingerprint(fingerprint: dict | None, mcfg: ModelConfig, path: str) -> None:
    """model_config.json must still be the config the weights were trained with (its fingerprint), in every field
    that changes what the model computes (all but TRAINING_ONLY_FIELDS): a ValueError naming the fields."""
    if fingerprint is None:
        return
    trained, now = fingerprint["model_config"], to_dict(mcfg)
    changed = [k for k in now if k not in TRAINING_ONLY_FIELDS and trained.get(k) != now[k]]
    if changed:
        fields = "; ".join(f"{k}={now[k]!r} (trained with {trained.get(k)!r})" for k in changed[:4])
        raise ValueError(f"{os.path.join(path, 'model_config.json')} is not the config the weights were trained "
                         f"with ({FINGERPRINT}): {fields}{'; ...' if len(changed) > 4 else ''}; that changes what "
                         f"the model computes: put the trained values back")


def check_weights(saved: dict, expected: dict, file: str) -> None:
    """Saved weights must fit the model their config builds: a ValueError that says which sizes differ."""
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    shapes = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in saved and saved[k].shape != v.shape]
    if missing or extra or shapes:
        parts = ([f"sizes differ (saved vs config): {'; '.join(shapes[:3])}{'; ...' if len(shapes) > 3 else ''}"]
                 if shapes else [])
        parts += [f"{len(missing)} weight(s) missing (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(extra)} unexpected (e.g. {extra[0][:80]})"] if extra else []
        raise ValueError(f"{file} holds the weights of another configuration than its model_config.json: "
                         + ", ".join(parts))


LOG_REQUIRED = ("step", "tokens", "full_val", "val_ntp_loss", "val_bpb")
MAX_LOG_BYTES = 256 << 20  # a row is about 300 bytes: 800,000 evaluations
LOG_COLUMN = re.compile(r"step|tokens|flops|global_batch|elapsed_s|tokens_per_s|lr|grad_norm|full_val|"
                        r"(train|val)_(loss|ntp_loss|bpb|ppl|fs_loss_\d+|fs_target_cos_\d+)")  # `log_columns`


def read_log(name: str, trained_dir: str | None = None):
    """The run's log_data.csv as a pandas DataFrame (one row per evaluation). A log that cannot be read, lacks
    the columns every log has, or holds something other than numbers is a ValueError naming the file."""
    import pandas as pd

    path = os.path.join(run_path(name, trained_dir), "log_data.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: the run has no training log")
    size = os.path.getsize(path)
    if size > MAX_LOG_BYTES:
        raise ValueError(f"{path} is {size:,} bytes, more than the {MAX_LOG_BYTES:,} a training log can be")
    with open(path, "rb") as f:
        raw = f.read()
    if raw and not raw.endswith(b"\n"):  # train() ends every row with one: a file cut short loses its end
        raise ValueError(f"{path} is cut short: its last row ends without a newline (a copy or a write that did "
                         "not finish); restore the file")
    try:
        log = pd.read_csv(io.BytesIO(raw), encoding="utf-8")
    except (ValueError, UnicodeDecodeError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise ValueError(f"{path} is not a readable CSV log ({first_line(e)})") from None
    missing = [c for c in LOG_REQUIRED if c not in log.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing} every training log has: a damaged log")
    unknown = [str(c)[:40] for c in log.columns if not LOG_COLUMN.fullmatch(str(c))]
    if unknown or len(set(log.columns)) != len(log.columns):
        raise ValueError(f"{path} has a damaged header (column(s) {unknown[:3] or 'named twice'} are none that "
                         "train() writes): a damaged log")
    text = [c for c in log.columns if len(log) and not pd.api.types.is_numeric_dtype(log[c])]
    if text:
        raise ValueError(f"{path} holds values that are not numbers in column(s) {text[:5]}: a damaged log")
    gaps = [c for c in LOG_REQUIRED if log[c].isna().any()]
    if gaps:
        raise ValueError(f"{path} has rows without a value in column(s) {gaps}: a damaged log")
    return log


# ---------------------------------------------------------------- writing a run


def default_name(mcfg: ModelConfig, num_params: int) -> str:
    """Architecture, size in millions of parameters and start time: FutureFormer_1.34m_2026-11-28_09-30."""
    arch = "FutureFormer" if mcfg.fs_periods else "baseline"
    return f"{arch}_{num_params / 1e6:.2f}m_{time.strftime('%Y-%m-%d_%H-%M')}"


def log_columns(mcfg: ModelConfig) -> list[str]:
    cols = ["step", "tokens", "flops", "global_batch", "elapsed_s", "tokens_per_s", "lr", "grad_norm", "full_val"]
    for split in SPLITS:
        cols += [f"{split}_{m}" for m in ("loss", "ntp_loss", "bpb", "ppl")]
        for k in range(1, mcfg.fs_periods + 1):
            cols.append(f"{split}_fs_loss_{k}")
            if mcfg.fs_loss not in VOCAB_FS_LOSSES:
                cols.append(f"{split}_fs_target_cos_{k}")
    return cols


def write_log(path: str, rows: list[dict], columns: list[str]) -> None:
    f = io.StringIO(newline="")
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_atomically(path, f.getvalue().encode())


def check_runs_folder(root: str) -> None:
    """Before a run starts: `root` can hold run folders, that is, it is a folder (or will be created in one) that
    this process may write in; else a ValueError naming it."""
    folder = os.path.abspath(root)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"trained_dir={root!r} is not allowed: {folder} is a file, and runs are folders under a "
                         "folder: name a folder (it is created if missing)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"trained_dir={root!r} is not allowed: {folder} is read-only for this user; name a folder "
                         "you can write in")


def reserve_folder(root: str, name: str | None, default: str) -> str:
    """Create the run folder; never reuse one. A chosen name that exists is an error; the default name
    gets a suffix instead."""
    check_runs_folder(root)
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
    stopped_at: int | None = None     # the last completed step, when training was interrupted (Ctrl-C, SIGTERM, ...)
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
    run.path = reserve_folder(runs_folder(trained_dir), name, default_name(mcfg, run.model.num_params()))
    run.train_cfg = tcfg = replace(tcfg, model_name=os.path.basename(run.path), processes=tcfg.processes or 1)
    save_model(run.path, run.model, mcfg, tcfg)
    write_log(os.path.join(run.path, "log_data.csv"), run.log, log_columns(mcfg))
    if run.last is not None and run.last.path is None:  # ema_save_last: the last weights go beside it
        run.last.train_cfg = last_weights_config(tcfg)
        run.last.path = reserve_folder(os.path.dirname(run.path), run.last.train_cfg.model_name, "")
        save_model(run.last.path, run.last.model, mcfg, run.last.train_cfg)
        write_log(os.path.join(run.last.path, "log_data.csv"), run.last.log, log_columns(mcfg))
    return run.path


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


class RunFolder:
    """The folders a training run writes as it goes: its own, and with ema_save_last its twin's (the last weights,
    `last_weights_config`). Without a folder (save=False, or a torchrun process other than the first) every write
    is skipped. A folder made for a new run is removed again if the run fails before its first step (`discard`)."""

    def __init__(self, mcfg: ModelConfig, tcfg: TrainConfig, path: str | None = None, last_path: str | None = None,
                 new: bool = False):
        self.mcfg, self.tcfg, self.path, self.last_path, self._new = mcfg, tcfg, path, last_path, new
        self.columns = log_columns(mcfg)

    @classmethod
    def create(cls, root: str, mcfg: ModelConfig, tcfg: TrainConfig, num_params: int, processes: int) -> "RunFolder":
        """Reserve the folder of a new run (and its twin's) under `root` and write its configs now, so that even a
        crashed run says what it was. The config records the name it is saved under and how many processes trained
        it (the global batch)."""
        path = reserve_folder(root, tcfg.model_name, default_name(mcfg, num_params))
        tcfg = replace(tcfg, model_name=os.path.basename(path), processes=processes)
        last_path = None
        try:
            if tcfg.ema_save_last:
                last_path = reserve_folder(root, last_weights_config(tcfg).model_name, "")
                save_configs(last_path, mcfg, last_weights_config(tcfg))
            save_configs(path, mcfg, tcfg)
        except BaseException:  # a taken twin name, a full disk: leave no folder to block the names
            for p in (path, last_path):
                if p:
                    shutil.rmtree(p, ignore_errors=True)
            raise
        return cls(mcfg, tcfg, path, last_path, new=True)

    @classmethod
    def resumed(cls, resume: str, ckpt: dict, mcfg: ModelConfig, tcfg: TrainConfig, trained_dir: str | None,
                log: list, last_log: list) -> "RunFolder":
        """The folder a resumed run goes on in (`resume_folder`), with its configs and its log up to the
        checkpoint; the twin's folder goes beside it, and follows it to NAME_from_<step>."""
        given = tcfg.model_name
        path, tcfg = resume_folder(resume, ckpt, tcfg, trained_dir)
        if not os.path.isfile(os.path.join(path, "train_config.json")) or tcfg.model_name != given or \
                to_dict(tcfg) != ckpt["train_config"]:  # a new folder, or settings changed on resuming
            save_configs(path, mcfg, tcfg)
        last_path = None
        if tcfg.ema_save_last:
            last_path = os.path.join(os.path.dirname(path), last_weights_config(tcfg).model_name)
            save_configs(last_path, mcfg, last_weights_config(tcfg))
        folder = cls(mcfg, tcfg, path, last_path)
        folder.write_logs(log, last_log)
        return folder

    def started(self) -> None:
        """The run took its first step: from now on its folders stay, whatever happens."""
        self._new = False

    def discard(self) -> None:
        """Remove the folders of a new run that never took a step (nothing of it is lost)."""
        for p in (self.path, self.last_path) if self._new else ():
            if p:
                shutil.rmtree(p, ignore_errors=True)

    def write_logs(self, log: list, last_log: list) -> None:
        """log_data.csv of the run (and of its twin), each written whole and atomically."""
        if self.path and log:
            write_log(os.path.join(self.path, "log_data.csv"), log, self.columns)
        if self.last_path and last_log:
            write_log(os.path.join(self.last_path, "log_data.csv"), last_log, self.columns)

    def checkpoint(self, step: int, model, opt, gen, state: dict) -> str | None:
        """checkpoints/step_<step>.pt in the run's folder (`write_checkpoint`); its path, or None without a folder."""
        return write_checkpoint(self.path, step, model, opt, gen, state, self.mcfg, self.tcfg) if self.path else None

    def last_checkpoint(self) -> str | None:
        return last_checkpoint(self.path)

    def save(self, model, last_model, log: list, last_log: list) -> None:
        """The finished run: model.pth, both configs and the whole log (and the twin's, with the last weights)."""
        if self.path:
            save_model(self.path, model, self.mcfg, self.tcfg)
        if self.last_path:
            save_model(self.last_path, last_model, self.mcfg, last_weights_config(self.tcfg))
        self.write_logs(log, last_log)


def check_disk_space(root: str, model, tcfg: TrainConfig, start: int = 0) -> None:
    """Before the first step: room under `root` for what the run will write (model.pth, and its twin's; a checkpoint
    every checkpoint_interval steps, each the weights, AdamW's two moments and the averaged weights), or a DiskFullError
    that says how much is needed. So that a full disk stops a run before it trains, not when it saves."""
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values()) + (1 << 16)
    checkpoints = (tcfg.max_iters - 1) // tcfg.checkpoint_interval - start // tcfg.checkpoint_interval \
        if tcfg.checkpoint_interval else 0
    needed = weights * (1 + tcfg.ema_save_last) + max(0, checkpoints) * weights * (3 + bool(tcfg.ema_decay)) + (1 << 20)
    free = free_bytes(root)
    if free is not None and needed > free:
        raise DiskFullError(os.path.join(root, tcfg.model_name or "<the run>"), needed, False,
                            what=f"the run would write about {human_size(needed)} (model.pth {human_size(weights)}"
                                 f"{f' and {checkpoints} checkpoints' if checkpoints else ''}) into")


# ---------------------------------------------------------------- checkpoints


def write_checkpoint(path: str, step: int, model, opt, gen, state: dict, mcfg, tcfg) -> str:
    folder = os.path.join(path, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    file = os.path.join(folder, f"step_{step:06d}.pt")
    weights = cpu_state(model)
    check_finite(weights, f"the checkpoint {file}")
    if "ema" in state:
        check_finite(state["ema"]["weights"], f"the checkpoint {file} (its averaged weights)")
    ckpt = {"step": step, "model": weights,
            "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "batch_rng": gen.get_state(),
            "model_config": to_dict(mcfg), "train_config": to_dict(tcfg), **state}
    if torch.cuda.is_available():
        ckpt["cuda_rng"] = torch.cuda.get_rng_state_all()
    write_atomically(file, torch_bytes(ckpt))
    return file


def checkpoint_files(path: str | None) -> list[str]:
    """The checkpoints train() wrote in the run folder `path` (checkpoints/step_*.pt), oldest first."""
    folder = os.path.join(path, "checkpoints") if path else None
    if not folder or not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if re.fullmatch(r"step_\d+\.pt", f)]


def last_checkpoint(path: str | None) -> str | None:
    files = checkpoint_files(path)
    return files[-1] if files else None


CHECKPOINT_KEYS = {"step": int, "model": dict, "optimizer": dict, "model_config": dict, "train_config": dict,
                   "log": list}  # what every checkpoint holds, and of which type


def load_checkpoint(path: str) -> dict:
    """A checkpoint written by train(): plain tensors, numbers and dicts, loaded with weights_only=True. A file that
    is damaged, cut short, not a checkpoint, or holds configs that do not load or weights that are not finite is a
    ValueError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = read_torch_file(path, "checkpoint", "resume from an earlier one")
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a checkpoint written by train.py (it holds a {type(ckpt).__name__})")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a checkpoint written by train.py (missing {missing})")
    wrong = [k for k, kind in CHECKPOINT_KEYS.items() if not isinstance(ckpt[k], kind) or isinstance(ckpt[k], bool)]
    if wrong or not all(torch.is_tensor(v) for v in ckpt["model"].values()):
        raise ValueError(f"{path} is not a checkpoint written by train.py (damaged fields: {wrong or ['model']})")
    for key, cls in (("model_config", ModelConfig), ("train_config", TrainConfig)):
        try:
            from_dict(cls, ckpt[key])
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: its {key} does not load ({e})") from None
    ema = ckpt.get("ema", {"weights": {}})
    if not isinstance(ema, dict) or not isinstance(ema.get("weights"), dict):
        raise ValueError(f"{path} is not a checkpoint written by train.py (damaged fields: ['ema'])")
    bad = non_finite(ckpt["model"]) + non_finite(ema["weights"])
    if bad:
        raise ValueError(f"{path} holds NaN or infinite weights ({_names(bad)}): resume from an earlier checkpoint")
    return ckpt


def checkpoint_owner(resume: str, ckpt: dict) -> str | None:
    """The run folder that owns the checkpoint file `resume`: the folder F of F/checkpoints/step_*.pt, when F's own
    model_config.json and train_config.json are the checkpoint's configs (but for the settings a resumed run may
    change, `_identity`); else None (a checkpoint copied elsewhere, or put into another run's folder)."""
    file = os.path.realpath(resume)
    folder = os.path.dirname(os.path.dirname(file))
    if os.path.basename(os.path.dirname(file)) != "checkpoints" or not re.fullmatch(r"step_\d+\.pt",
                                                                                   os.path.basename(file)):
        return None
    for fname, key in (("model_config.json", "model_config"), ("train_config.json", "train_config")):
        try:
            if _identity(read_json(os.path.join(folder, fname), fname)) != _identity(ckpt[key]):
                return None
        except (OSError, ValueError):
            return None
    return folder


def _identity(cfg: dict) -> dict:
    """A saved config without what a resumed run may change (RESUMABLE_FIELDS, and the record of those changes): a
    run's checkpoints from before and after such a change belong to the same run."""
    return {k: v for k, v in cfg.items() if k not in (*RESUMABLE_FIELDS, "changes")}


def resume_folder(resume: str, ckpt: dict, tcfg: TrainConfig, trained_dir: str | None) -> tuple[str, TrainConfig]:
    """Where a resumed run continues, always a folder directly under the runs folder: `trained_dir` if given, else
    the folder of the run that owns the checkpoint (`checkpoint_owner`), else trained/. In the owner's own folder
    when it is there and nothing would be lost; otherwise in a new folder NAME_from_<step> under the runs folder,
    and a line says why. Nothing is ever written beside a checkpoint that no run folder owns. A folder whose run
    finished (model.pth), or whose log_data.csv runs past the checkpoint's step (a later crash, or resuming an
    earlier checkpoint), is kept as it is."""
    owner = checkpoint_owner(resume, ckpt)
    root = os.path.realpath(trained_dir or (os.path.dirname(owner) if owner else runs_folder()))
    if owner is not None and os.path.dirname(owner) == root:
        logged = 0
        if os.path.isfile(os.path.join(owner, "log_data.csv")):
            try:
                log = read_log(owner)
                logged = int(log["step"].max()) if len(log) else 0
            except ValueError:  # a damaged log: keep it as it is, and go on elsewhere
                logged = None
        finished = os.path.isfile(os.path.join(owner, "model.pth"))
        if not finished and logged is not None and logged <= ckpt["step"]:
            return owner, tcfg
        why = (f"{owner} {'finished' if finished else f'has logged up to step {logged}'}, past the checkpoint's step "
               f"{ckpt['step']}: it is left as it is") if logged is not None or finished else (
            f"{os.path.join(owner, 'log_data.csv')} is damaged: {owner} is left as it is")
    elif owner is not None:
        why = f"the checkpoint's run folder {owner} is not in the runs folder {root}"
    elif os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(resume))), "train_config.json")):
        why = (f"{resume} is not a checkpoint of the run whose folder it lies in (the configs differ): that run "
               "is left as it is")
    else:
        why = f"{resume} does not lie in the checkpoints/ of the run folder whose configs it holds"
    name = f"{tcfg.model_name or 'resumed'}_from_{ckpt['step']}"
    new = reserve_folder(root, None, name)
    print(f"{why}; the run continues in {new}", file=sys.stderr)
    return new, replace(tcfg, model_name=os.path.basename(new))


# ---------------------------------------------------------------- naming runs, their FLOPs, their validation text


SEED_SUFFIX = re.compile(r"^(?P<group>.+)_s\d+$")  # NAME_s0, NAME_s1, ...: seeds of one configuration


def seed_names(base: str, seeds: list[int]) -> list[str]:
    return [f"{base}_s{seed}" for seed in seeds]


def run_flops(name: str, trained_dir: str | None = None) -> float:
    """The training FLOPs of a saved run: its log's last `flops`, or (for logs that predate the column) its
    training tokens x flops_per_token of its config."""
    log = read_log(name, trained_dir)
    if log.empty:
        raise ValueError(f"run {name!r} has an empty log_data.csv: it never reached an evaluation")
    last = log.iloc[-1]
    if "flops" in log.columns:
        return float(last["flops"])
    return float(last["tokens"]) * flops_per_token(load_configs(name, trained_dir)[0])


def run_train_tokens(name: str, trained_dir: str | None = None) -> int:
    """The tokens of a saved run's training split (one pass over it): the count it recorded
    (TrainConfig.train_tokens), or for a run trained before that field existed, its training data counted again
    (data.get_data, from the cache when there is one). ValueError names the run when that data cannot be read."""
    mcfg, tcfg = load_configs(name, trained_dir)
    if tcfg.train_tokens:
        return int(tcfg.train_tokens)
    try:
        return int(get_data(mcfg, tcfg).meta["train"]["tokens"])
    except (OSError, ValueError) as e:
        raise ValueError(f"run {name!r} predates the recorded train_tokens, and its training data cannot be read "
                         f"to count them: {e}") from None


def resolve_names(names=None, trained_dir: str | None = None) -> list[str]:
    """`names` as a list (one name is fine); None or empty = every run in `trained_dir` (default trained/).
    A missing run is run_path's FileNotFoundError (it lists the runs there and near matches); no runs
    at all is a FileNotFoundError that says so."""
    if isinstance(names, str):
        names = [names]
    names = list(names or [])
    if not names:
        names = list_runs(trained_dir)
        if not names:
            raise FileNotFoundError(f"no trained runs in {runs_folder(trained_dir)}: train one first "
                                    "(train.ipynb, or python train.py --data_path=...)")
    seen = {}
    for name in names:
        folder = os.path.realpath(run_path(name, trained_dir))
        if folder in seen:
            again = "twice" if name == seen[folder] else f"twice, as {seen[folder]!r} and {name!r}"
            raise ValueError(f"run {folder} is named {again}: name each run once (a run named twice would count "
                             "as two runs)")
        seen[folder] = name
    return names


def same_run(a: str, b: str, trained_dir: str | None = None) -> bool:
    """Whether names a and b (a run's name or a path to its folder, in any form) are one run folder."""
    try:
        return os.path.realpath(run_path(a, trained_dir)) == os.path.realpath(run_path(b, trained_dir))
    except FileNotFoundError:
        return False


def validation_text_of(name: str, trained_dir: str | None = None) -> str:
    """What the run validated on (its logged val_* columns): the text it recorded (TrainConfig.val_text), or for a
    run trained before that field existed, its configured validation text read again (data.read_validation_text)."""
    tcfg = load_configs(name, trained_dir)[1]
    return tcfg.val_text or read_validation_text(tcfg)
