"""Bad inputs tried as a user would (issue 32): each command of the project run on a wrong setting, a broken file
or an odd text, in a scratch folder, and judged from the outside.

    python tests/bad_inputs.py [--only=WORD] [--keep]

Every probe must end with exit code 0 (it did the right thing) or 2 (one line saying what is wrong), never print a
traceback, and write nothing outside the scratch folder's runs folder and the project's data cache. A probe that
expects an error must get one. It prints a line per probe and a summary, and exits 1 when any probe fails. It is
not a pytest module (about 80 subprocesses, 2-3 minutes on 2 cores); the failure tests in test_hardening.py and
test_failures.py cover each class of bad input in the fast lane.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(os.path.dirname(REPO), "shared", "data", "tinystories_sample.txt")
VALID = os.path.join(os.path.dirname(REPO), "shared", "data", "tinystories_valid_sample.txt")
TINY = ["--dim=32", "--num_layers=2", "--num_q_heads=2", "--max_seq_len=32", "--batch_size=4", "--max_iters=3",
        "--eval_interval=3", "--eval_samples=2", "--compile=false", "--precision=fp32", "--fs_periods=1"]


def with_settings(args: list[str], *changes: str) -> list[str]:
    """args with each --key=value of `changes` in place of the same key's (an option may be given once), and the
    rest of `changes` (a bare --key, a stray word) appended."""
    keys = {c.split("=", 1)[0]: c for c in changes if c.startswith("--") and "=" in c}
    out = [keys.pop(a.split("=", 1)[0], a) if a.startswith("--") else a for a in args]
    return out + list(keys.values()) + [c for c in changes if not (c.startswith("--") and "=" in c)]


def probes(s: str) -> list[tuple[str, list[str], str]]:
    """(what a user tried, the command, what must happen: "error" = exit 2 with one line, "ok" = exit 0, "either"
    = 0 or 2). s is the scratch folder; its runs folder is s/trained, with `base` (a tiny baseline) and `ff` (a tiny
    FutureFormer) in it."""
    tr = f"--trained_dir={s}/trained"
    train = ["train.py", tr, f"--data_path={SAMPLE}", f"--val_data_path={VALID}", *TINY]

    def t(*changes):
        return with_settings(train, *changes)

    data = [
        ("an empty data file", t(f"--data_path={s}/empty.txt"), "error"),
        ("a data file of spaces and newlines", t(f"--data_path={s}/blank.txt"), "error"),
        ("a binary file as data (a model.pth)", t(f"--data_path={s}/trained/base/model.pth"), "error"),
        ("data in Latin-1, not UTF-8", t(f"--data_path={s}/latin1.txt", "--model_name=latin1"), "either"),
        ("data with Windows line ends", t(f"--data_path={s}/crlf.txt", "--model_name=crlf"), "ok"),
        ("one story with no separator", t(f"--data_path={s}/one_story.txt", "--model_name=one"), "either"),
        ("the validation text as training text", t(f"--data_path={VALID}", "--model_name=val_as_train"),
         "error"),
        ("a validation file that is empty", t(f"--val_data_path={s}/empty.txt"), "error"),
        ("a data path that is a folder", t(f"--data_path={s}"), "error"),
        ("a data path glob that matches nothing", t(f"--data_path={s}/*.parquet"), "error"),
    ]
    settings = [
        ("max_iters=0", t("--max_iters=0"), "error"),
        ("max_iters=-5", t("--max_iters=-5"), "error"),
        ("batch_size=0", t("--batch_size=0"), "error"),
        ("a fractional batch size", t("--batch_size=2.5"), "error"),
        ("dim not divisible by the heads", t("--dim=30", "--num_q_heads=4"), "error"),
        ("vocab_len=2", t("--vocab_len=2"), "error"),
        ("a tokenizer that does not exist", t("--tokenizer=wordpiece"), "error"),
        ("an eval interval past the end", t("--eval_interval=50", "--model_name=late_eval"), "either"),
        ("lr_max below lr_min", t("--lr_max=1e-5", "--lr_min=1e-3"), "either"),
        ("lr_max=1e9 (diverges)", t("--lr_max=1e9", "--max_iters=6", "--model_name=diverge"), "either"),
        ("precision=fp16", t("--precision=fp16"), "error"),
        ("device=cuda without a GPU", t("--device=cuda"), "error"),
        ("device=tpu", t("--device=tpu"), "error"),
        ("compile=maybe", t("--compile=maybe"), "error"),
        ("an unknown setting", t("--learning_rate=1e-3"), "error"),
        ("a setting without a value", t("--dim"), "error"),
        ("a stray word", t("fast"), "error"),
        ("the same seed twice", t("--seeds=1,1", "--model_name=twice"), "error"),
        ("a seed that is not a number", t("--seeds=one"), "error"),
        ("a negative seed", t("--seeds=-1", "--model_name=neg"), "either"),
        ("an empty run name", t("--model_name="), "either"),
        ("a run name of '..'", t("--model_name=.."), "error"),
        ("a run name with a newline", t("--model_name=a\nb"), "error"),
        ("a 300-character run name", t("--model_name=" + "x" * 300), "error"),
        ("a run name in another script", t("--model_name=história"), "either"),
        ("a runs folder that is a file", t(f"--trained_dir={s}/empty.txt"), "error"),
        ("a runs folder under /proc", t("--trained_dir=/proc/ff_runs"), "error"),
        ("resume from a file that is not there", t(f"--resume={s}/nope.pt"), "error"),
        ("resume from a folder", t(f"--resume={s}/trained/base"), "error"),
        ("resume from a model.pth", t(f"--resume={s}/trained/base/model.pth"), "error"),
        ("resume from a log file", t(f"--resume={s}/trained/base/log_data.csv"), "error"),
        ("grad_accum_steps=0", t("--grad_accum_steps=0"), "error"),
    ]
    inference = [
        ("generate from a run that is not there", ["inference.py", tr, "nope"], "error"),
        ("generate with no run named", ["inference.py", tr], "error"),
        ("an empty prompt", ["inference.py", tr, "base", "", "--max_len=5"], "ok"),
        ("a prompt of emoji and Chinese", ["inference.py", tr, "base", "🐉 小猫 café", "--max_len=5"], "ok"),
        ("a prompt longer than the context", ["inference.py", tr, "base", "Once upon a time " * 40, "--max_len=5"],
         "ok"),
        ("max_len=0", ["inference.py", tr, "base", "--max_len=0"], "either"),
        ("max_len=-3", ["inference.py", tr, "base", "--max_len=-3"], "error"),
        ("temperature=-1", ["inference.py", tr, "base", "--temperature=-1"], "error"),
        ("temperature=nan", ["inference.py", tr, "base", "--temperature=nan"], "error"),
        ("top_k=0", ["inference.py", tr, "base", "--top_k=0", "--max_len=5"], "either"),
        ("top_k above the vocabulary", ["inference.py", tr, "base", "--top_k=100000", "--max_len=5"], "either"),
        ("top_p=0", ["inference.py", tr, "base", "--top_p=0", "--max_len=5"], "either"),
        ("top_p=1.5", ["inference.py", tr, "base", "--top_p=1.5"], "error"),
        ("a run folder whose model.pth is gone", ["inference.py", tr, "no_weights"], "error"),
        ("a run folder whose configs are swapped in", ["inference.py", tr, "swapped"], "error"),
        ("--show_future on a baseline", ["inference.py", tr, "base", "--show_future", "--max_len=3"], "either"),
        ("--compile=true for 3 tokens", ["inference.py", tr, "ff", "--compile=true", "--max_len=3"], "ok"),
    ]
    compare = [
        ("compare one run with itself by two names", ["model_comparison.py", tr, "base", f"{s}/trained/base"],
         "error"),
        ("a reference that is not compared", ["model_comparison.py", tr, "base", "ff", "--reference=nope"], "error"),
        ("paired single runs (both seed 0: one pair)", ["model_comparison.py", tr, "base", "ff", "--paired"],
         "either"),
        ("a metric that does not exist", ["model_comparison.py", tr, "base", "--metrics=accuracy"], "error"),
        ("x=epochs", ["model_comparison.py", tr, "base", "--x=epochs"], "error"),
        ("a figure path that is a folder", ["model_comparison.py", tr, "base", f"--out={s}"], "error"),
        ("a figure path that is not a picture", ["model_comparison.py", tr, "base", f"--out={s}/fig.txt"], "error"),
        ("a figure over the data", ["model_comparison.py", tr, "base", f"--out={s}/latin1.txt"], "error"),
        ("num_sequences=0", ["model_comparison.py", tr, "base", "--num_sequences=0"], "either"),
        ("seq_len=100000", ["model_comparison.py", tr, "base", f"--val_data_path={VALID}", "--seq_len=100000"],
         "error"),
        ("columns that do not exist", ["model_comparison.py", tr, "base", "--columns=speed"], "error"),
        ("a group with no runs", ["model_comparison.py", tr, "base", "--group=g="], "error"),
        ("a validation text that is a folder", ["model_comparison.py", tr, "base", "ff", f"--val_data_path={s}"],
         "error"),
    ]
    export = [
        ("export a run that is not there", ["export.py", tr, "nope", f"{s}/hf_nope"], "error"),
        ("export a FutureFormer", ["export.py", tr, "ff", f"{s}/hf_ff"], "error"),
        ("export into a file", ["export.py", tr, "base", f"{s}/empty.txt"], "error"),
        ("export into a folder that holds files", ["export.py", tr, "base", f"{s}/trained"], "error"),
        ("export a baseline into a new folder", ["export.py", tr, "base", f"{s}/hf_base"], "ok"),
        ("export again over the first export", ["export.py", tr, "base", f"{s}/hf_base"], "error"),
    ]
    return data + settings + inference + compare + export


def setup(s: str) -> None:
    """The scratch folder: two tiny trained runs, a run folder without weights, one with another run's configs,
    and odd text files."""
    py = sys.executable
    base = with_settings([py, "train.py", f"--trained_dir={s}/trained", f"--data_path={SAMPLE}",
                          f"--val_data_path={VALID}", *TINY], "--max_iters=10", "--eval_interval=5")
    for args in (with_settings(base, "--fs_periods=0", "--model_name=base"), [*base, "--model_name=ff"]):
        subprocess.run(args, cwd=REPO, check=True, capture_output=True, text=True)
    shutil.copytree(f"{s}/trained/base", f"{s}/trained/no_weights")
    os.remove(f"{s}/trained/no_weights/model.pth")
    shutil.copytree(f"{s}/trained/base", f"{s}/trained/swapped")
    for f in ("model_config.json", "train_config.json"):
        shutil.copy(f"{s}/trained/ff/{f}", f"{s}/trained/swapped/{f}")
    stories = open(SAMPLE, encoding="utf-8").read()[:200_000]
    open(f"{s}/empty.txt", "w").close()
    open(f"{s}/blank.txt", "w").write("\n \n\t\n" * 100)
    open(f"{s}/latin1.txt", "wb").write(stories.replace("<|endoftext|>", "<|endoftext|> Café déjà vu.").encode(
        "latin-1", errors="replace"))
    open(f"{s}/crlf.txt", "wb").write(stories.replace("\n", "\r\n").encode())
    open(f"{s}/one_story.txt", "w").write(stories.replace("<|endoftext|>", " "))


def snapshot() -> set[str]:
    """What a probe may not change: the files of the repository outside its caches and of the folder above it."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True,
                         text=True).stdout.splitlines()
    places = {d: os.listdir(os.path.join(REPO, d)) for d in ("..", "trained")}
    return ({line for line in out if "data_cache" not in line and "__pycache__" not in line}
            | {os.path.join(d, f) for d, names in places.items() for f in names})


def main(argv: list[str]) -> int:
    only = next((a.split("=", 1)[1] for a in argv if a.startswith("--only=")), "")
    s = tempfile.mkdtemp(prefix="ff_bad_inputs_")
    t0 = time.time()
    setup(s)
    before, failed, ran = snapshot(), [], 0
    for what, args, expect in probes(s):
        if only and only not in what:
            continue
        ran += 1
        r = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
        out = r.stdout + r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith(("error", "usage", "train.py:"))]
        problems = []
        if "Traceback" in out:
            problems.append("a traceback")
        if r.returncode not in (0, 2):
            problems.append(f"exit code {r.returncode}")
        if expect == "error" and r.returncode != 2:
            problems.append("no error")
        if expect == "ok" and r.returncode != 0:
            problems.append("an error")
        if r.returncode == 2 and not errors:
            problems.append("exit code 2 without an error line")
        after = snapshot()
        if after != before:
            problems.append(f"wrote outside its folder: {sorted(after ^ before)[:3]}")
            before = after
        said = (errors or r.stdout.strip().splitlines() or [""])[-1][:150]
        print(f"{'FAIL' if problems else 'ok  '} {r.returncode} {what}: {'; '.join(problems) or said}", flush=True)
        if problems:
            failed.append((what, out[-2000:]))
    print(f"\n{ran - len(failed)} of {ran} probes passed in {time.time() - t0:.0f} s (scratch folder {s})")
    for what, out in failed:
        print(f"\n--- {what}\n{out}")
    if "--keep" not in argv:
        shutil.rmtree(s, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
