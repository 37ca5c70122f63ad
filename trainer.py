"""The training loop: `train(model_cfg, train_cfg)` trains one run and returns it (`runs.Run`), `train_seeds` one run
per seed, `match_flops` sizes a run to another's compute. train.py is its command line.

What a run does: AdamW (weight decay on matrices only) with gradient clipping and the learning-rate schedule
(optimizer.py), random windows of the training split, an evaluation every `eval_interval` steps on `eval_samples`
fixed batches of each split, and a last evaluation over the *whole* held-out validation split in fixed windows
(scoring.py), so that the last row of the log is deterministic and anyone can recompute it. It writes
trained/<model_name>/ as it goes (runs.py: configs first, log_data.csv at every evaluation, checkpoints every
`checkpoint_interval` steps, model.pth at the end) and never overwrites an existing folder. With `ema_decay`,
what is evaluated, logged and saved is a moving average of the weights (optimizer.WeightAverage);
`ema_save_last` keeps the last weights as well, as the twin run NAME_last (runs.last_weights_config).
"""

import contextlib
import math
import os
import signal
import sys
import threading
import time

import torch
from tqdm import tqdm  # the text bar, also in notebooks: a widget bar is saved as a stale "0/N" in the notebook

from batches import get_batch
from config import RESUMABLE_FIELDS, ModelConfig, TrainConfig, from_dict, replace, to_dict
from data import SPLITS, TokenData, check_separate_validation, describe_data, get_data, validation_text
from dist import Dist
from hardware import autocast, available_memory, machine_name, pick_device, pick_precision, quiet_compile
from modules.flops import flops_per_token
from modules.model import Model
from optimizer import WeightAverage, lr_at, make_optimizer
from runs import (
    DiskFullError,
    Run,
    RunFolder,
    check_disk_space,
    check_runs_folder,
    default_name,
    last_checkpoint,
    last_weights_config,
    load_checkpoint,
    run_flops,
    runs_folder,
    seed_names,
)
from scoring import estimate, evaluate_split, loss_metrics
from stopping import StopFlag, Stopped, say  # noqa: F401  (trainer.Stopped: train.py's name)

# ---------------------------------------------------------------- the loop


def train(model_cfg: ModelConfig | None = None, train_cfg: TrainConfig | None = None, *,
          trained_dir: str | None = None, save: bool = True, resume: str | None = None,
          changes: dict | None = None, data: TokenData | None = None, progress: bool = True) -> Run:
    """Train a model and return the Run. With `save`, trained_dir/<model_name>/ is written as the run goes
    (default trained_dir: the repository's trained/); `resume` continues from a checkpoint file of such a
    folder, in that folder, exactly where it stopped (configs come from the checkpoint when not given).
    `changes` (with `resume`): new values of RESUMABLE_FIELDS, such as a lower lr_max after a divergence; they
    apply from the checkpoint's step on and the run records them (TrainConfig.changes). A train_cfg given with
    `resume` may differ from the checkpoint's in those fields only, and is taken the same way.
    `data` skips `get_data` (e.g. when a notebook already loaded it)."""
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        model_cfg, train_cfg = resume_configs(ckpt, resume, model_cfg, train_cfg, changes)
    elif changes:
        raise ValueError(f"changes={changes} needs resume=<checkpoint>: a new run takes its settings from train_cfg")
    if model_cfg is None or train_cfg is None:
        raise ValueError("train() needs a ModelConfig and a TrainConfig (or resume=<checkpoint>)")
    mcfg, tcfg = model_cfg, train_cfg
    if tcfg.checkpoint_interval and not save:
        raise ValueError(f"checkpoint_interval={tcfg.checkpoint_interval} needs save=True: checkpoints go "
                         "into the run folder")
    device = pick_device(tcfg.device)
    if save and int(os.environ.get("RANK", "0")) == 0:
        check_runs_folder(runs_folder(trained_dir))  # before the data loads: the run could not be saved
    dist = Dist.from_env(device)  # one process, unless started by torchrun
    stop = StopFlag(dist)
    try:
        with stop:
            return _train(mcfg, tcfg, ckpt, resume, trained_dir, save, data, progress, device, dist, stop)
    finally:
        dist.close()


_KEPT_BECAUSE = {  # why the other settings stay as the checkpoint has them
    **dict.fromkeys(("batch_size", "grad_accum_steps", "seed", "data_path", "val_data_path", "val_fraction"),
                    "the batches the run reads follow from it"),
    **dict.fromkeys(("max_iters", "warmup_iters", "final_flat_iters", "anneal_type", "num_restarts", "T_mult"),
                    "the learning-rate schedule's shape, which the steps so far followed, follows from it"),
    **dict.fromkeys(("precision", "device", "compile", "ema_decay", "ema_save_last", "eval_interval",
                     "eval_samples"), "the numbers the run has computed and logged so far follow from it"),
    **dict.fromkeys(("model_name", "group"), "the run continues under its own name, in its folder (or "
                                             "NAME_from_STEP)"),
    **dict.fromkeys(("processes", "train_tokens", "passes", "machine", "started", "val_text", "changes"),
                    "the run records it itself"),
}


def resume_configs(ckpt: dict, resume: str, model_cfg, train_cfg, changes: dict | None):
    """(ModelConfig, TrainConfig) a resumed run goes on with: the checkpoint's, with `changes` and a given train_cfg's
    differences applied where they are RESUMABLE_FIELDS and recorded in TrainConfig.changes at the checkpoint's
    step. Anything else that differs is a ValueError that names it and says why it stays."""
    saved_m, saved_t = from_dict(ModelConfig, ckpt["model_config"]), from_dict(TrainConfig, ckpt["train_config"])
    saved = to_dict(saved_t)
    model_fields = set(to_dict(saved_m))
    given = dict(changes or {})
    if model_cfg is not None:
        given.update({k: v for k, v in to_dict(model_cfg).items() if to_dict(saved_m)[k] != v})
    if train_cfg is not None:
        given.update({k: v for k, v in to_dict(train_cfg).items() if saved[k] != v})
    unknown = sorted(k for k in given if k not in saved and k not in model_fields)
    if unknown:
        raise ValueError(f"changes={unknown} are not settings: a resumed run may change {list(RESUMABLE_FIELDS)}")
    given = {k: v for k, v in given.items() if k in model_fields or saved[k] != v}
    refused = [k for k in given if k not in RESUMABLE_FIELDS]
    if refused:
        k = refused[0]
        why = ("the checkpoint's weights are the model it configures" if k in model_fields else
               _KEPT_BECAUSE.get(k, "the run so far follows from it"))
        raise ValueError(f"the config given differs from the checkpoint's in {refused}: {resume} goes on with its "
                         f"own {k} ({why}); a resumed run may change {', '.join(RESUMABLE_FIELDS)}")
    if not given:
        return saved_m, saved_t
    record = {"step": ckpt["step"], **{k: [saved[k], v] for k, v in given.items()}}
    return saved_m, replace(saved_t, **given, changes=[*(saved_t.changes or []), record])


def launcher(world: int = 1) -> str:
    """How train.py is started with `world` processes: python for one, torchrun (this machine's share of them per
    node, from torchrun's LOCAL_WORLD_SIZE) for several."""
    if world <= 1:
        return "python train.py"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if local == world:
        return f"torchrun --standalone --nproc_per_node={world} train.py"
    return f"torchrun --nnodes={world // local} --nproc_per_node={local} <your rendezvous options> train.py"


def resume_command(checkpoint: str, world: int = 1) -> str:
    """The command that resumes from `checkpoint`: with as many processes as wrote it (torchrun for several)."""
    return f"{launcher(world)} --resume={checkpoint}"


def check_memory(mcfg: ModelConfig, tcfg: TrainConfig, world: int, device: str) -> None:
    """Before anything is allocated: the memory a step certainly takes, from the settings that size it (batch,
    accumulation, context, vocabulary, the model's size), against what `device` has free; a ValueError that says
    what would be needed. A lower bound (weights, gradients and AdamW's two moments in fp32, the step's token
    windows, one micro-batch's logits), so a run it lets through may still run out: it catches settings off by
    orders of magnitude, such as grad_accum_steps=1000000."""
    with torch.device("meta"):  # sizes without allocating: a huge config must not fill the memory here
        params = Model(mcfg).num_params()
    sequences = tcfg.batch_size * tcfg.grad_accum_steps * world
    parts = {"the step's token windows": sequences * (mcfg.max_seq_len + mcfg.lookahead) * 8 * 3,
             "weights, gradients and AdamW's state": params * 4 * (4 + bool(tcfg.ema_decay) + tcfg.ema_save_last),
             "one micro-batch's logits": tcfg.batch_size * mcfg.max_seq_len * mcfg.vocab_size * 4}
    needed, have = sum(parts.values()), available_memory(device)
    if have is not None and needed > have:
        what = ", ".join(f"{k} {v / 1e9:,.2f} GB" for k, v in parts.items())
        raise ValueError(f"batch_size={tcfg.batch_size} x grad_accum_steps={tcfg.grad_accum_steps} x "
                         f"{world} process(es) x max_seq_len={mcfg.max_seq_len} with vocab_len={mcfg.vocab_len} and "
                         f"{params:,} parameters needs at least {needed / 1e9:,.2f} GB ({what}), and {device} has "
                         f"{have / 1e9:,.2f} GB free: lower batch_size, grad_accum_steps or max_seq_len")


def _train(mcfg, tcfg, ckpt, resume, trained_dir, save, data, progress, device, dist, stop) -> Run:
    # the precision is resolved once, here, and saved: a resumed run goes on in the precision it started in
    precision, why = pick_precision(tcfg.precision, device)
    tcfg = replace(tcfg, precision=precision)
    check_memory(mcfg, tcfg, dist.world, device)
    if not dist.is_main:
        dist.barrier()  # the first process tokenizes into the cache, the others then read it
    if data is None:
        check_separate_validation(tcfg)
        data = get_data(mcfg, tcfg)
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
    last_log = []  # with ema_save_last: the log of the last weights' twin run
    tokens_per_step = tcfg.batch_size * tcfg.grad_accum_steps * dist.world * mcfg.max_seq_len  # the global batch
    passes = tcfg.max_iters * tokens_per_step / int(data.meta["train"]["tokens"])
    resumed = ckpt is not None  # a resumed run keeps what it recorded when it started
    tcfg = replace(tcfg, train_tokens=int(data.meta["train"]["tokens"]), passes=round(passes, 4),
                   machine=tcfg.machine if resumed and tcfg.machine else machine_name(device),
                   started=tcfg.started if resumed and tcfg.started else
                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   val_text=tcfg.val_text if resumed and tcfg.val_text else validation_text(data, tcfg))
    clock = {"elapsed_s": 0.0, "train_time_s": 0.0}
    folder = RunFolder(mcfg, tcfg)  # none: save=False, or not the first process
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rngs"][dist.rank] if "torch_rngs" in ckpt else ckpt["torch_rng"])
        gen.set_state(ckpt["batch_rng"])
        if "cuda_rng" in ckpt and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        if to_dict(tcfg)["weight_decay"] != ckpt["train_config"]["weight_decay"]:  # changed on resuming
            opt.param_groups[0]["weight_decay"] = tcfg.weight_decay  # the matrices' group (make_optimizer)
        start, log = ckpt["step"], list(ckpt["log"])
        last_log = list(ckpt.get("last_log", []))
        clock = {k: ckpt[k] for k in clock}
        if dist.is_main:
            check_disk_space(runs_folder(trained_dir), model, tcfg, start)
            folder = RunFolder.resumed(resume, ckpt, mcfg, tcfg, trained_dir, log, last_log)
    elif save and dist.is_main:  # only the first process writes the run folder
        check_disk_space(runs_folder(trained_dir), model, tcfg, start)
        folder = RunFolder.create(runs_folder(trained_dir), mcfg, tcfg, model.num_params(), dist.world)
    tcfg = folder.tcfg  # the name it is saved under, and the processes that trained it
    stop.arm()  # from here a first Ctrl-C, SIGTERM or SIGHUP lets a step finish, checkpoints it and stops
    ema = WeightAverage(model, tcfg.ema_decay) if tcfg.ema_decay else None
    if ema is not None and ckpt is not None:
        ema.load_state_dict(ckpt["ema"])
    judged = ema.model if ema is not None else model  # what the log evaluates and model.pth keeps
    fpt = flops_per_token(mcfg)
    compiling = will_compile(tcfg, device)
    progress = progress and dist.is_main
    wrapped = model
    if dist.active:  # gradients averaged over the processes as backward goes
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[dist.local_rank] if device == "cuda" else None)
    with quiet_compile():  # torch.compile's first call imports inductor, which warns about torch's own code
        step_model = torch.compile(wrapped) if compiling else wrapped

    def measure(net, full):
        out = estimate(net, data, mcfg, tcfg, device, splits=("train",) if full else SPLITS, dist=dist)
        if full:  # the val columns of the last row: the whole held-out split, instead of eval_samples batches
            parts = evaluate_split(net, data, "val", mcfg, tcfg.batch_size, device, tcfg, dist)
            out.update(loss_metrics(parts, "val", data.meta["val"]["bytes_per_token"]))
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
        print(f"data: {describe_data(data)}; {tcfg.max_iters} steps make {passes:.2f} passes over the "
              "training split")
        micro = f"({tcfg.grad_accum_steps} micro-batches of {tcfg.batch_size}) " if tcfg.grad_accum_steps > 1 else ""
        print(f"training a {'FutureFormer' if mcfg.fs_periods else 'baseline'} of {model.num_params() / 1e6:.3f}M "
              f"parameters for {tcfg.max_iters} steps of {tokens_per_step // mcfg.max_seq_len} x {mcfg.max_seq_len} "
              f"tokens {micro}({tcfg.max_iters * tokens_per_step * fpt:.3g} FLOPs) on {device} in {precision} ({why})")
    elif progress:
        print(f"resuming at step {start} of {tcfg.max_iters} on {device} in {precision} ({why})")
    if ckpt is not None and dist.is_main and tcfg.changes != ckpt["train_config"].get("changes"):
        change = tcfg.changes[-1]  # resumed with other settings
        print(f"from step {start} on: {', '.join(f'{k} {v[0]} -> {v[1]}' for k, v in change.items() if k != 'step')}"
              " (recorded in train_config.json as `changes`)", file=sys.stderr)
    model.train()
    bar = tqdm(total=tcfg.max_iters, initial=start, desc=os.path.basename(folder.path) if folder.path else "training",
               unit="step", dynamic_ncols=True, disable=not progress)
    if compiling and progress:
        bar.write("compiling the training step with torch.compile (tens of seconds on a 2-core CPU; the time it took "
                  "follows; --compile=false skips it)", file=sys.stderr)
    quiet = quiet_compile if compiling else contextlib.nullcontext  # inductor's warnings off the progress bar
    t_start = time.perf_counter() - clock["elapsed_s"]
    grad_norms = list(ckpt.get("grad_norms", [])) if ckpt is not None else []  # since the last log row
    done = start
    try:
        for step in range(start, tcfg.max_iters):
            t0 = time.perf_counter()
            lr = lr_at(step, tcfg)
            for group in opt.param_groups:
                group["lr"] = lr
            model.loss_fn.set_progress(step / tcfg.max_iters)  # a scheduled future-sight weight follows the run
            # the step's whole batch, then its micro-batches (grad_accum_steps of batch_size sequences each):
            # one draw, so that accumulating gives the sequences one big batch would
            # (every process draws the same; process r takes micro-batches r*A .. r*A + A - 1 of them)
            xs, ys = get_batch(data, "train", tokens_per_step // mcfg.max_seq_len, mcfg.max_seq_len,
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
                        with autocast(device, tcfg.precision), quiet():
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
                raise NonFiniteError(step + 1, float(loss_value), float(norm), folder.last_checkpoint(), tcfg,
                                     dist.world)
            opt.step()
            if ema is not None:
                ema.update(model)
            grad_norms.append(float(norm))
            clock["train_time_s"] += time.perf_counter() - t0
            done = step + 1
            folder.started()  # from now on a failure leaves the folder (and what it logged) in place
            if done % 10 == 0 or done == tcfg.max_iters:
                bar.set_postfix(ntp=f"{float(model.loss_parts.get('ntp_loss', loss_value)):.3f}", lr=f"{lr:.2e}",
                                val=f"{log[-1]['val_ntp_loss']:.3f}" if log else "-", refresh=False)
            bar.update(1)
            if done % tcfg.eval_interval == 0 or done == tcfg.max_iters:
                row, last_row = log_row(done, grad_norms, full=done == tcfg.max_iters)
                grad_norms = []
                clock["elapsed_s"] = row["elapsed_s"] = time.perf_counter() - t_start
                log.append(row)
                if last_row is not None:
                    last_row["elapsed_s"] = row["elapsed_s"]
                    last_log.append(last_row)
                folder.write_logs(log, last_log)
            if save and done < tcfg.max_iters and (
                    stopping or (tcfg.checkpoint_interval and done % tcfg.checkpoint_interval == 0)):
                clock["elapsed_s"] = time.perf_counter() - t_start
                rngs = dist.gather(torch.get_rng_state())  # every process's dropout stream, for an exact resume
                file = folder.checkpoint(done, model, opt, gen, {
                    "log": log, "grad_norms": grad_norms, "world": dist.world, "torch_rngs": rngs, **clock,
                    **({"ema": ema.state_dict()} if ema is not None else {}),
                    **({"last_log": last_log} if tcfg.ema_save_last else {})})
            if stopping and done < tcfg.max_iters:
                break
    except BaseException as e:
        bar.close()
        folder.discard()  # failed before its first step: leave no folder to block the name
        if isinstance(e, KeyboardInterrupt):  # a second signal: stopped in the middle of a step
            raise Stopped(f"stopped at once during step {done + 1} of {tcfg.max_iters} ({e or 'Ctrl-C'} twice): "
                          f"that step is lost; {_where_now(folder, dist)}") from None
        if isinstance(e, DiskFullError):
            e.strerror += f"; training stopped after step {done}: {_where_now(folder, dist)}"
        raise
    bar.close()
    model.eval()
    judged.requires_grad_(True)  # the average is handed over as a model like any other
    run = Run(model=judged, model_cfg=mcfg, train_cfg=tcfg, log=log, path=folder.path)
    if tcfg.ema_save_last:
        run.last = Run(model=model, model_cfg=mcfg, train_cfg=last_weights_config(tcfg), log=last_log,
                       path=folder.last_path, stopped_at=done if done < tcfg.max_iters else None)
    if done < tcfg.max_iters:  # Ctrl-C: stopped cleanly after a completed step
        run.stopped_at = done
        if not dist.is_main:
            return run
        if folder.path:
            run.resume_from = file
            say(f"\ninterrupted after step {done} of {tcfg.max_iters}: checkpoint saved to {file}, log so far in "
                 f"{os.path.join(folder.path, 'log_data.csv')}. Continue with:\n  {resume_command(file, dist.world)}")
        else:
            say(f"\ninterrupted after step {done} of {tcfg.max_iters}: nothing is saved (save=False); "
                 "save_run(run) keeps the model as it is")
        return run
    try:
        _save_until_written(folder, judged, model, log, last_log, dist)
    except DiskFullError as e:
        last, weights = folder.last_checkpoint(), os.path.join(os.path.dirname(e.filename), "model.pth")
        if os.path.isfile(weights):  # only a small file after it: the weights are safe
            e.strerror += f"; training finished and its weights are saved in {weights}"
        else:
            e.strerror += (f"; training finished but its weights are not saved: the log is complete in {folder.path}"
                           + (f", and the last checkpoint {last} is kept: after freeing space, "
                              f"{resume_command(last, dist.world)} trains the last steps again" if last else
                              " (there is no checkpoint: train with --checkpoint_interval to keep one)"))
        e.run = run  # in Python the trained run is still here: free space, then save_model(run.path, run.model, ...)
        raise
    except KeyboardInterrupt:  # a second signal while saving: the previous files stay whole
        raise Stopped(f"stopped at once while saving {folder.path}: its weights are not saved; "
                      f"{_where_now(folder, dist)}") from None
    return run


def _save_until_written(folder: RunFolder, judged, model, log: list, last_log: list, dist) -> None:
    """folder.save; where the disk fills at that moment and nothing else keeps the weights (no model.pth, no
    checkpoint), a person at a terminal is asked to free space and press Enter, as often as it takes; Ctrl-C or the
    end of the input gives up (the DiskFullError then says what is lost). Without a terminal it raises at once."""
    while True:
        try:
            folder.save(judged, model, log, last_log)
            return
        except DiskFullError as e:
            weights = os.path.join(os.path.dirname(e.filename), "model.pth")
            if (os.path.isfile(weights) or folder.last_checkpoint() or not dist.is_main or not sys.stdin.isatty()
                    or threading.current_thread() is not threading.main_thread()):
                raise
            say(f"train.py: {e}; training finished and its weights are only in memory: free that space, then press "
                "Enter to write them again (Ctrl-C gives up and loses them)")
            ctrl_c = signal.signal(signal.SIGINT, signal.default_int_handler)  # not StopFlag's "after this step"
            try:
                input()
            except (EOFError, KeyboardInterrupt):
                raise e from None
            finally:
                signal.signal(signal.SIGINT, ctrl_c)


def _where_now(folder: RunFolder, dist) -> str:
    """Where a run that stopped early stands: its log and last checkpoint, and the command that resumes it."""
    if not folder.path:
        return "nothing is saved (save=False, or this is not the first process)"
    last = folder.last_checkpoint()
    log = os.path.join(folder.path, "log_data.csv")
    return (f"the log so far is in {log}; " if os.path.isfile(log) else "") + (
        f"the last checkpoint is {last}: continue with {resume_command(last, dist.world)}" if last else
        "there is no checkpoint to continue from (--checkpoint_interval=N keeps some)")


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
        with autocast(device, tcfg.precision), quiet_compile():
            return step_model, step_model(x, y)[1]
    except Exception as e:  # torch._dynamo / inductor errors come in many kinds
        warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); training "
                      "eagerly. Pass --compile=false to skip compiling.", stacklevel=3)
        torch.set_rng_state(rng)
        with autocast(device, tcfg.precision):
            return model, model(x, y)[1]


class NonFiniteError(FloatingPointError):
    """The loss or the gradient norm stopped being a number: training stops at that step, before the
    optimizer writes it into the weights."""

    def __init__(self, step, loss, norm, checkpoint, tcfg, world: int = 1):
        lower = f"a lower lr_max (now {tcfg.lr_max}) or grad_clip (now {tcfg.grad_clip})"
        where = (f"the last good checkpoint is {checkpoint}: resume from it with {lower}, e.g. "
                 f"{resume_command(checkpoint, world)} --lr_max={tcfg.lr_max / 3:.3g}" if checkpoint
                 else f"there is no checkpoint to go back to: train again with {lower}")
        super().__init__(f"step {step}: the loss is {loss} and the gradient norm {norm}; training stopped before "
                         f"the step reached the weights, and nothing non-finite is saved; {where}")
        self.step, self.checkpoint = step, checkpoint










# ---------------------------------------------------------------- equal compute, seeds




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




def train_seeds(model_cfg: ModelConfig, train_cfg: TrainConfig, seeds, *, trained_dir: str | None = None,
                data: TokenData | None = None, progress: bool = True, command: str | None = None) -> list[Run]:
    """Train the same configuration once per seed, one after another, as NAME_s<seed>, each recording
    group=NAME (NAME = train_cfg.model_name, or the default name), so that model_comparison treats them as one
    group. Every folder name is checked before the first run starts. Interrupted, it says which seeds did not run
    and how to run them: `command` (train.py passes its own command line, without --seeds and --model_name) with
    --model_name=NAME --seeds=<those>."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds} is not allowed: give distinct seeds, e.g. 0,1,2")
    base = train_cfg.model_name or default_name(model_cfg, Model(model_cfg).num_params())
    root = runs_folder(trained_dir)
    first = int(os.environ.get("RANK", "0")) == 0  # under torchrun the first process checks (and torchrun stops all)
    names = seed_names(base, seeds)
    if train_cfg.ema_save_last:  # the last weights' twins too (G_last_s<seed>)
        names += [last_weights_config(replace(train_cfg, seed=s, model_name=n, group=base)).model_name
                  for s, n in zip(seeds, seed_names(base, seeds))]
    taken = [n for n in names if first and os.path.exists(os.path.join(root, n))]
    if taken:
        raise FileExistsError(f"{', '.join(os.path.join(root, n) for n in taken)} already exist(s) and runs are "
                              "never overwritten: choose another model_name")
    if data is None:
        check_separate_validation(train_cfg)
        data = get_data(model_cfg, train_cfg)
    runs = []
    for i, (seed, name) in enumerate(zip(seeds, seed_names(base, seeds))):
        tcfg = replace(train_cfg, seed=seed, model_name=name, group=base)
        try:
            runs.append(train(model_cfg, tcfg, trained_dir=trained_dir, data=data, progress=progress))
        except Stopped as e:
            raise Stopped(f"{e}; {_seeds_left(seeds[i:], root, base, command)}") from None
        if runs[-1].stopped_at is not None:  # stopped after a step: the seeds after this one are not started
            if first:
                print(_seeds_left(seeds[i:], root, base, command), file=sys.stderr)
            break
    return runs


def _seeds_left(seeds: list[int], root: str, base: str, command: str | None) -> str:
    """What an interrupted train_seeds leaves to do: seeds[0] was running, the others never started."""
    current = os.path.join(root, seed_names(base, seeds[:1])[0])
    todo, notes = list(seeds[1:]), []
    if not os.path.isdir(current):  # stopped before its first step: nothing of it is left
        todo.insert(0, seeds[0])
    elif last_checkpoint(current):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        notes.append(f"seed {seeds[0]} resumes from its checkpoint: {resume_command(last_checkpoint(current), world)}")
    else:
        notes.append(f"seed {seeds[0]} has no checkpoint: remove {current} and train it again with the others")
        todo.insert(0, seeds[0])
    if todo:
        how = (f"{command} --model_name={base} --seeds={','.join(map(str, todo))}" if command else
               f"train_seeds(model_cfg, replace(train_cfg, model_name={base!r}), {todo})")
        notes.append(f"seed(s) {', '.join(map(str, todo))} did not run: {how}")
    return "; ".join(notes)
