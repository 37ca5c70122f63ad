"""Training from the shell (the loop itself is trainer.py; `from train import train` works too):

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

import os
import shlex
import signal
import sys

from config import ModelConfig, TrainConfig, parse_overrides
from data import DataSourceError
from runs import DiskFullError, run_flops
from trainer import (  # noqa: F401  (train.ipynb and scripts: from train import train)
    Stopped,
    launcher,
    match_flops,
    train,
    train_seeds,
)

# ---------------------------------------------------------------- command line


OPTIONS = {  # train.py's options that are not config fields, for --help
    "--trained_dir=PATH": "where run folders go (default: trained/)",
    "--resume=CHECKPOINT": "continue a run from trained/NAME/checkpoints/step_*.pt, with its configs (learning "
                           "rates, grad_clip, weight_decay and checkpoint_interval may be given anew)",
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
    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    old = {n: signal.signal(getattr(signal, n), _stop) for n in names}  # outside training (train() takes them
    try:                                                                 # over there): one line, no traceback
        return _main(argv)
    finally:
        for n, handler in old.items():
            signal.signal(getattr(signal, n), handler)


def _main(argv: list[str]) -> int:
    first = int(os.environ.get("RANK", "0")) == 0  # under torchrun, the first process reports
    try:
        (m_over, t_over), extra = parse_overrides(argv, ModelConfig, TrainConfig,
                                                  extra={"trained_dir": str, "resume": str, "seeds": str,
                                                         "match_flops": str})
        if extra.get("resume"):
            if extra.get("seeds") or extra.get("match_flops"):
                raise ValueError("--resume continues one run with the configs of its checkpoint: drop "
                                 f"{sorted(set(extra) - {'resume', 'trained_dir'})}")
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
        if seeds is not None:
            given = {**m_over, **t_over, **{k: v for k, v in extra.items() if k == "trained_dir"}}
            if extra.get("match_flops"):
                given["max_iters"] = tcfg.max_iters
            command = " ".join([launcher(int(os.environ.get("WORLD_SIZE", "1"))), *(
                shlex.quote(f"--{k}={_text(v)}") for k, v in given.items() if k not in ("model_name", "seed"))])
            runs = train_seeds(mcfg, tcfg, seeds, trained_dir=extra.get("trained_dir"), command=command)
        else:
            runs = [train(mcfg, tcfg, trained_dir=extra.get("trained_dir"), resume=extra.get("resume"),
                          changes={**m_over, **t_over} if extra.get("resume") else None)]
    except (DataSourceError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk (DiskFullError says what it needs), a read-only or missing folder, ...
        print(f"train.py: {e if isinstance(e, DiskFullError) or not e.filename else f'{e.strerror}: {e.filename}'}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a second Ctrl-C, SIGTERM, SIGHUP (Stopped: says what was saved), or a first
        if first:                   # one before training began
            print(f"\ntrain.py: {e if str(e) else 'interrupted (Ctrl-C) before training began: nothing was saved'}",
                  file=sys.stderr)
        return 130
    if runs[-1].stopped_at is not None:
        return 130  # interrupted: train() said where the checkpoint is and how to resume
    if not first:
        return 0
    for run, what in [(r, w) for one in runs for r, w in ((one, ""), (one.last, "the last weights ")) if r]:
        last = run.log[-1]
        print(f"saved {what}to {run.path}\nvalidation (whole validation split): NTP loss {last['val_ntp_loss']:.4f}, "
              f"{last['val_bpb']:.4f} bits per byte, perplexity {last['val_ppl']:.2f}; "
              f"{last['tokens_per_s']:,.0f} training tokens/s")
    return 0


def _stop(signum, frame):
    raise Stopped(f"{signal.Signals(signum).name}: stopped; no training step was under way")


def _text(value) -> str:
    """A setting as --key=value writes it."""
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
