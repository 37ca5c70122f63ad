"""The command blocks of the README and of the docs run as written, in order, from a fresh copy of the repository,
and the README's file structure section matches the tree.

Every ```bash block of README.md, then of each docs/ page (in name order), is run by bash, in order, in a copy of
the repository beside a link to ../shared (so the pages' relative data paths hold). Commands are shortened, never
changed otherwise: training gets a few steps (--max_iters=4 ...), generation a few tokens, the benchmarks their
smallest settings. The set-up and test lines (pip, python -m pytest) are left out: the suite is what runs them.
```text blocks are synopses. The research log (experiments/) and trained/README.md record the commands that made
the runs; they are not run.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

import tools

README = os.path.join(tools.REPO_DIR, "README.md")
DOCS_DIR = os.path.join(tools.REPO_DIR, "docs")


def pages() -> list[str]:
    """The pages whose command blocks run: README.md first, then docs/*.md in name order."""
    docs = sorted(os.path.join(DOCS_DIR, n) for n in os.listdir(DOCS_DIR) if n.endswith(".md"))
    return [README, *docs]

TINY = "--dim=32 --num_layers=3 --max_seq_len=32 --fs_periods=2"
SHORTER = {  # script -> what is appended to its command lines
    "train.py": "--max_iters=4 --eval_interval=2 --eval_samples=1 --batch_size=4",
    "inference.py": "--max_len=8",
    "model_comparison.py": "",
    "benchmarks/train_speed.py": f"--steps=1 --batch_size=2 {TINY}",
    "benchmarks/train_loop_speed.py": f"--steps=2 --rounds=1 --batch_size=2 {TINY.rsplit(' ', 1)[0]}",
    "benchmarks/generate_speed.py": f"--tokens=40 --repeats=1 {TINY}",
    "benchmarks/precision_speed.py": f"--steps=1 --batch_size=2 {TINY}",
    "benchmarks/tokenizer_speed.py": "--repeat=1",
    "benchmarks/compile_speed.py": f"--rounds=1 --steps=1 --check_steps=0 --batch_size=2 {TINY}",
    "benchmarks/machine.py": "--n=256",
    "benchmarks/data_speed.py": "--rounds=1",
    "benchmarks/gpu_check.py": "--tiny --steps=8",
}
SKIP = ("pip ", "python -m pytest")


def bash_blocks(text: str) -> list[str]:
    """The ```bash blocks, in order, those indented in a list item too (dedented)."""
    import textwrap

    return [textwrap.dedent(indent + body) for indent, body in
            re.findall(r"^([ \t]*)```bash\n(.*?)^[ \t]*```", text, flags=re.S | re.M)]


def shortened(block: str) -> str:
    """The block with continuation lines joined, set-up and test lines dropped, and SHORTER's options added to
    each command (before any trailing comment)."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith(SKIP):
            continue
        m = re.match(r"^(?:python|torchrun(?: --\S+)*) (\S+\.py)", line)
        if m:
            script = m.group(1)
            assert script in SHORTER, f"a page runs {script}: add how to shorten it to tests/test_readme.py"
            command, _, comment = line.partition("  #")
            for option in re.findall(r"(--\w+)=", SHORTER[script]):  # the page's own value gives way to the shorter one
                command = re.sub(rf" {option}=\S+", "", command)
            line = f"{command.rstrip()} {SHORTER[script]}".rstrip()
        out.append(line)
    return "\n".join(out)


def test_shortening_keeps_commands_and_drops_set_up():
    block = "pip install -r requirements.txt\nV=x\npython train.py --a=1 \\\n    --b=2  # a comment\n"
    assert shortened(block) == f"V=x\npython train.py --a=1      --b=2 {SHORTER['train.py']}"
    assert shortened("python train.py --max_iters=30 --a=1") == f"python train.py --a=1 {SHORTER['train.py']}"


@pytest.mark.skipif(not os.path.isfile(tools.VALID_SAMPLE_PATH), reason="no TinyStories data beside the repository")
def test_readme_command_blocks_run_in_order_from_a_fresh_copy(tmp_path):
    blocks = [(os.path.relpath(page, tools.REPO_DIR), block) for page in pages()
              for block in bash_blocks(open(page, encoding="utf-8").read())]
    assert len(blocks) >= 5
    repo = tmp_path / "repo"
    shutil.copytree(tools.REPO_DIR, repo, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "data_cache", "scores", "checkpoints", "__pycache__", "*.out.ipynb", ".*_cache"))
    os.symlink(os.path.realpath(os.path.join(tools.REPO_DIR, "..", "shared")), tmp_path / "shared")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "MPLBACKEND": "Agg"}
    for i, (page, block) in enumerate(blocks):
        script = shortened(block)
        if not script.strip():
            continue
        r = subprocess.run(["bash", "-e", "-c", script], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, (f"{page}, block {i + 1} failed:\n{script}\n--- stdout:\n{r.stdout[-2000:]}\n"
                                   f"--- stderr:\n{r.stderr[-3000:]}")
        assert "Traceback" not in r.stderr, f"{page}, block {i + 1}:\n{r.stderr[-3000:]}"
    assert "my_first_ff" in tools.list_runs(str(repo / "trained"))


def _anchors(path: str) -> set[str]:
    """The #anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", open(path, encoding="utf-8").read(), flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def test_links_between_the_pages_resolve():
    """Every relative link of the README, the docs, the research log and trained/README.md names a file that exists,
    and its #anchor, if any, a heading of that page."""
    docs = [os.path.join(d, n) for d in (DOCS_DIR, os.path.join(tools.REPO_DIR, "experiments"))
            for n in sorted(os.listdir(d)) if n.endswith(".md")]
    for page in [README, os.path.join(tools.TRAINED_DIR, "README.md"), *docs]:
        text = re.sub(r"^```.*?^```", "", open(page, encoding="utf-8").read(), flags=re.S | re.M)
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(page), file)) if file else page
            where = os.path.relpath(page, tools.REPO_DIR)
            assert os.path.exists(path), f"{where} links {target}, which does not exist"
            if anchor:
                assert anchor in _anchors(path), f"{where} links {target}: no such heading"


def _tree_section() -> str:
    text = open(README, encoding="utf-8").read()
    return re.search(r"^## File structure\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M).group(1)


def test_file_structure_section_names_every_tracked_top_level_file():
    """Every file and folder at the top of the repository (and every module of modules/) appears in the README's
    file structure section, and everything it names exists."""
    section = _tree_section()
    named = set(re.findall(r"`([^`\s]+?)`", section))
    top = {n for n in os.listdir(tools.REPO_DIR) if not n.startswith(".") and n not in (
        "data_cache", "venv", "__pycache__")} | {".ci/run"}
    for name in sorted(top):
        shown = name + "/" if os.path.isdir(os.path.join(tools.REPO_DIR, name)) else name
        assert shown in named or name in named, f"README's file structure does not mention {shown}"
    for module in os.listdir(os.path.join(tools.REPO_DIR, "modules")):
        if module.endswith(".py") and module != "__init__.py":
            assert module in named, f"README's file structure does not mention modules/{module}"
