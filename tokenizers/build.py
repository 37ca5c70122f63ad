"""Train a character-level BPE tokenizer and write every size to tokenizers/<name>/models/<size>.json.

    python tokenizers/build.py bpe_v2 [bpe_v1 ...] [--data_path=PATH] [--val_fraction=0.05] [--out_dir=DIR]

The text is the TRAIN split of a raw TinyStories file (data.read_stories, then
data.split_stories(stories, val_fraction): the last val_fraction of the stories are held out and
never seen). Training runs once to the largest size; each smaller size is a prefix of its merges.
The notebooks tokenizers/<name>/build.ipynb call `build` from this file.
"""

import argparse
import hashlib
import importlib.util
import sys
import time
from collections import Counter
from itertools import chain
from pathlib import Path

import regex

TOKENIZERS_DIR = Path(__file__).resolve().parent
REPO_DIR = TOKENIZERS_DIR.parent


def _import_by_path(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


load = _import_by_path("futureformer_tokenizers_load", TOKENIZERS_DIR / "load.py")


def _data():
    """The repo's data.py (read_stories, split_stories, SAMPLE_PATH), imported by path when first needed: it imports
    no other file of the repository, so this works from any directory."""
    return _import_by_path("futureformer_data", REPO_DIR / "data.py")


def training_text(data_path: str | Path, val_fraction: float = 0.05) -> tuple[list[str], dict]:
    """(the train stories of `data_path`, a description of them for the model files)."""
    stories = _data().read_stories(str(data_path))
    train, val = _data().split_stories(stories, val_fraction)
    with open(data_path, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    trained_on = {
        "file": Path(data_path).name, "sha256": sha256, "stories": len(train), "chars": sum(map(len, train)),
        "split": f"tools.split_stories(tools.read_stories(file), val_fraction={val_fraction}): the first "
                 f"{len(train)} of {len(stories)} stories; the last {len(val)} are held out for validation",
    }
    return train, trained_on


def train(name: str, stories: list[str], max_size: int, trained_on: dict | None = None):
    """The tokenizer `name` (its folder's PATTERN decides the pre-tokenization) trained on `stories`
    up to `max_size` tokens. Merges never cross a story boundary."""
    module = load.tokenizer_module(name)
    bpe, pattern = module.bpe, module.PATTERN
    if pattern is None:
        counts = Counter(stories)  # bpe_v1: each whole story is one sequence
    else:
        counts = Counter(chain.from_iterable(map(regex.compile(pattern).findall, stories)))
    alphabet, merges = bpe.learn_merges(counts, max_size)
    return bpe.Tokenizer(alphabet, merges, pattern, name, trained_on)


def build(name: str, data_path: str | Path | None = None, val_fraction: float = 0.05,
          out_dir: str | Path | None = None, sizes=None) -> dict[int, Path]:
    """Train `name` on the train split of `data_path` (default: ../shared/data/tinystories_sample.txt)
    and write `<size>.json` for the alphabet alone and every size of `sizes` (default bpe.SIZES)
    into `out_dir` (default tokenizers/<name>/models). Returns size -> file written."""
    module = load.tokenizer_module(name)
    data_path = Path(data_path or _data().SAMPLE_PATH)
    out_dir = Path(out_dir or module.MODELS_DIR)
    sizes = sorted(sizes or module.bpe.SIZES)
    start = time.perf_counter()
    stories, trained_on = training_text(data_path, val_fraction)
    full = train(name, stories, sizes[-1], trained_on)
    alphabet_len = len(full.alphabet)
    if full.vocab_len < sizes[-1]:
        raise ValueError(f"{data_path} gives only {full.vocab_len} tokens, fewer than the size {sizes[-1]} "
                         "asked for")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for size in [alphabet_len] + [s for s in sizes if s > alphabet_len]:
        written[size] = out_dir / f"{size}.json"
        written[size].write_text(full.truncated(size).to_json(), encoding="utf-8")
    print(f"{name}: trained on {trained_on['stories']} stories ({trained_on['chars']:,} characters) of "
          f"{data_path.name} in {time.perf_counter() - start:.1f} s; alphabet {alphabet_len} characters; "
          f"wrote sizes {list(written)} to {out_dir}")
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help=f"tokenizers to build, of {load.available_tokenizers()}")
    parser.add_argument("--data_path", default=None, help="raw TinyStories text file (default: the sample)")
    parser.add_argument("--val_fraction", type=float, default=0.05, help="stories held out (the last ones)")
    parser.add_argument("--out_dir", default=None,
                        help="write to OUT_DIR/<name>/ instead of the committed tokenizers/<name>/models/")
    args = parser.parse_args()
    for name in args.names:
        build(name, args.data_path, args.val_fraction, args.out_dir and Path(args.out_dir) / name)
