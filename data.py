"""The data pipeline up to the cache: raw stories -> tokenizer -> cached token ids, and bits per byte.

Data flows one way: text -> tokenizer -> cached token ids -> batches (batches.py) -> model. `get_data(model_cfg,
train_cfg)` gives a `TokenData` (both splits as token-id arrays, memory-mapped from the cache under data_cache/).
"""

import functools
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm

EOT = "<|endoftext|>"  # the separator between stories in TinyStories' raw text files
REPO_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE_PATH = os.path.join(REPO_DIR, "..", "shared", "data", "tinystories_sample.txt")
# an excerpt of TinyStories' official validation split: what offline runs validate and compare on
VALID_SAMPLE_PATH = os.path.join(REPO_DIR, "..", "shared", "data", "tinystories_valid_sample.txt")


# ---------------------------------------------------------------- raw stories


def read_stories(path: str) -> list[str]:
    """The stories of a raw TinyStories text file (stories separated by <|endoftext|>), stripped. A file that
    is not UTF-8 text is a ValueError naming the file and where it stops being text."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start:,}): give a "
                         f"text file of stories separated by {EOT}") from None
    if "\x00" in text:
        raise ValueError(f"{path} holds NUL bytes at offset {text.index(chr(0)):,}: it is a binary file, not a "
                         f"text file of stories separated by {EOT}")
    return [s.strip() for s in text.split(EOT) if s.strip()]


def split_stories(stories: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val): the last `val_fraction` of the stories are held out, the same way every time.

    The tokenizers are trained on the train part only, so held-out stories stay unseen by them too.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} is not allowed: must be between 0 and 1")
    if len(stories) < 2:
        raise ValueError(f"need at least 2 stories to hold some out for validation, got {len(stories)}")
    n_val = min(len(stories) - 1, max(1, round(val_fraction * len(stories))))
    return stories[:-n_val], stories[-n_val:]


# ---------------------------------------------------------------- tokenizers
#
# There is deliberately no tokenizers/__init__.py: a package named `tokenizers` would shadow the
# Hugging Face library of that name. Tokenizer code is therefore loaded by file path, under a private
# module name.

TOKENIZERS_DIR = os.path.join(REPO_DIR, "tokenizers")


def load_module(path, name: str | None = None):
    """Import the Python file at `path` (once; later calls reuse it) under `name`, by default a private
    name derived from the path. How the project imports anything under tokenizers/."""
    path = os.path.realpath(path)
    name = name or "_ff_" + hashlib.sha1(path.encode()).hexdigest()[:12] + "_" + os.path.basename(path)[:-3]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec, so dataclasses and pickle can find the module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def get_tokenizer(name: str, size: int):
    """The tokenizer `tokenizers/<name>/` of vocabulary size `size` (bos, eos and pad not counted).

    Goes through `tokenizers/load.py` when it exists (the project's one loader), else straight to
    `tokenizers/<name>/tokenizer.py`'s `get_tokenizer(size)`.
    """
    folder = os.path.join(TOKENIZERS_DIR, str(name))
    if not os.path.isfile(os.path.join(folder, "tokenizer.py")):
        known = sorted(d for d in os.listdir(TOKENIZERS_DIR)
                       if os.path.isfile(os.path.join(TOKENIZERS_DIR, d, "tokenizer.py")))
        raise ValueError(f"tokenizer={name!r} is not allowed: choose a folder of {TOKENIZERS_DIR}: {known}")
    loader = os.path.join(TOKENIZERS_DIR, "load.py")
    if os.path.isfile(loader):
        return load_module(loader).get_tokenizer(name, size)
    return load_module(os.path.join(folder, "tokenizer.py")).get_tokenizer(size)


# ---------------------------------------------------------------- tokenized data
#
# Tokenize once (nanoGPT's prepare.py, llama2.c's tinystories.py): every story becomes
# bos, its tokens, eos; the stories of a split are concatenated into one stream of uint16 ids and
# written to a memmap cache. Batches are windows read from that stream.
#
# Cache layout, under TrainConfig.data_cache_dir (relative = relative to the repo root):
#     <source>-<tokenizer>-<size>-<key>/    key: hash of data source, tokenizer and CACHE_VERSION
#         train.bin   val.bin               uint16 token ids, native byte order, no header
#         meta.json                         see get_data()
# A cache folder is built under a temporary name and renamed into place only once it is complete, so
# an interrupted run never leaves a half-written cache behind; it is rebuilt on demand.

HUB_DATASET = "noanabeshima/TinyStoriesV2"  # the default source: its `train` and `validation` splits
HUB_SPLITS = {"train": "train", "val": "validation"}  # our split name -> the hub's
SPLITS = ("train", "val")
CACHE_VERSION = 2  # bump when the cache's content or layout changes: old caches are then ignored (2: text_sha256)
# Encoded to fingerprint the tokenizer's behaviour: a rebuilt tokenizer gets a fresh cache.
_PROBE = ("Once upon a time, there was a little girl named Lily. She said, \"Wow! Look at 123 red "
          "balls…\" Tom's dog—Max—didn't care.\n\nThe end. “Mañana”, café, naïve ‘quote’ «ok» ¡yes!")


class DataSourceError(RuntimeError):
    """The stories could not be read (e.g. the hub is unreachable); the message says what to do."""


@dataclass
class TokenData:
    """Tokenized stories: `train` and `val` are uint16 memmaps of one stream each
    (bos story eos bos story eos ...); `meta` is the cache's meta.json; `tokenizer` encoded them."""

    train: np.ndarray
    val: np.ndarray
    meta: dict
    tokenizer: object
    path: str = ""  # the cache folder

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"split={name!r} is not allowed: choose one of {list(SPLITS)}")
        return getattr(self, name)

    @property
    def pad_id(self) -> int:
        return self.meta["tokenizer"]["pad_id"]


def _resolve_data_path(path: str) -> str:
    """A data file given relative to the current directory or, failing that, to the repo root."""
    path = os.path.expanduser(path)
    for candidate in (path, os.path.join(REPO_DIR, path)):
        if os.path.isfile(candidate):
            return os.path.realpath(candidate)
        if os.path.isdir(candidate):
            raise FileNotFoundError(f"data path {path!r} is a directory: name its files (a comma-separated list, "
                                    f"or a glob such as {os.path.join(path, '*.txt')!r})")
    where = "" if os.path.isabs(path) else f" (looked relative to {os.getcwd()})" if os.path.samefile(
        os.getcwd(), REPO_DIR) else f" (looked relative to {os.getcwd()} and to {REPO_DIR})"
    raise FileNotFoundError(f"data file {path!r} not found{where}; it should be a text file of stories separated "
                            f"by {EOT}")


def resolve_data_paths(spec: str) -> list[str]:
    """The files of a data_path: one file, a comma-separated list, globs (data/*.txt, sorted), or a mix, in the
    order given, each looked up from the current directory, then from the repo root. A missing file, a glob that
    matches nothing, a directory, or a file named twice is a FileNotFoundError / ValueError naming it."""
    import glob

    files = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        if glob.has_magic(part):
            pattern = os.path.expanduser(part)
            matches = sorted(glob.glob(pattern)) or sorted(glob.glob(os.path.join(REPO_DIR, pattern)))
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise FileNotFoundError(f"data path {part!r} matches no file (looked relative to {os.getcwd()} "
                                        f"and to {REPO_DIR})")
            files += [os.path.realpath(m) for m in matches]
        else:
            files.append(_resolve_data_path(part))
    if not files:
        raise FileNotFoundError(f"data_path={spec!r} names no file")
    twice = sorted({f for f in files if files.count(f) > 1})
    if twice:
        raise ValueError(f"data_path={spec!r} names {', '.join(twice)} more than once: each story would count twice")
    return files


def _file_id(path: str) -> dict:
    st = os.stat(path)
    return {"path": path, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def check_separate_validation(tcfg) -> None:
    """Training: a ValueError if the validation text is one of the training files (any form of its path), since the
    validation loss would then score stories the model trained on. (Scoring reads a text alone as both splits.)"""
    if tcfg.data_path is None or tcfg.val_data_path is None:
        return
    if _resolve_data_path(tcfg.val_data_path) in resolve_data_paths(tcfg.data_path):
        raise ValueError(f"val_data_path={tcfg.val_data_path!r} is also a training file (data_path): the "
                         "validation loss would score stories the model trained on; give a separate file (e.g. "
                         "the official excerpt), or leave val_data_path unset to hold out val_fraction of them")


def _source(tcfg) -> dict:
    """What the stories come from, as recorded in meta.json and hashed into the cache key."""
    if tcfg.data_path is None:
        if tcfg.val_data_path is not None:
            raise ValueError(f"val_data_path={tcfg.val_data_path!r} is not allowed without data_path: "
                             f"the hub ({HUB_DATASET}) brings its own validation split")
        return {"kind": "hub", "dataset": HUB_DATASET, "splits": HUB_SPLITS}
    files = resolve_data_paths(tcfg.data_path)
    # one file keeps the form (and so the cache key) it always had; several are a list, in the order given
    source = {"kind": "file", "train": _file_id(files[0]) if len(files) == 1 else [_file_id(f) for f in files]}
    if tcfg.val_data_path is not None:
        source["val"] = _file_id(_resolve_data_path(tcfg.val_data_path))
    else:
        source["val_fraction"] = tcfg.val_fraction
    return source


def _file_ids(entry) -> list[dict]:
    """The file ids of a source entry: one file (a dict, the form single-file caches always had) or several (a list)."""
    return entry if isinstance(entry, list) else [entry]


def _tokenizer_info(tok, name: str, size: int) -> dict:
    info = {"name": name, "vocab_len": tok.vocab_len, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
            "pad_id": tok.pad_id}
    if tok.vocab_len != size:
        raise ValueError(f"tokenizer {name!r} of size {size} reports vocab_len={tok.vocab_len}")
    if max(tok.bos_id, tok.eos_id, tok.pad_id) > np.iinfo(np.uint16).max:
        raise ValueError(f"token ids up to {tok.pad_id} do not fit the uint16 cache")
    fp = hashlib.sha256(json.dumps(list(tok.encode(_PROBE, bos=False, eos=False))).encode())
    models = os.path.join(TOKENIZERS_DIR, name, "models")
    if os.path.isdir(models):  # the trained merges themselves, when they are a file we can find
        for fname in sorted(os.listdir(models)):
            if fname.split(".")[0] == str(size):
                with open(os.path.join(models, fname), "rb") as f:
                    fp.update(f.read())
    info["fingerprint"] = fp.hexdigest()[:16]
    return info


def tokenizer_fingerprint(tok, name: str, size: int) -> str:
    """A short hash of what the tokenizer does (a probe text's ids) and of its model file: the same for a tokenizer
    rebuilt with the same merges, different for any other. Data caches are keyed by it, and a run records it
    beside its weights (runs.save_model)."""
    return _tokenizer_info(tok, name, size)["fingerprint"]


def _cache_dir(tcfg, source: dict, tok_info: dict) -> str:
    root = os.path.join(REPO_DIR, os.path.expanduser(tcfg.data_cache_dir))  # an absolute path stays as is
    key = hashlib.sha256(json.dumps([CACHE_VERSION, source, tok_info], sort_keys=True).encode())
    if source["kind"] == "hub":
        label = source["dataset"].split("/")[-1]
    else:
        files = _file_ids(source["train"])
        label = os.path.splitext(os.path.basename(files[0]["path"]))[0] + (f"_plus{len(files) - 1}" * (len(files) > 1))
    label = re.sub(r"[^A-Za-z0-9_.]+", "_", label)[:40]
    return os.path.join(root, f"{label}-{tok_info['name']}-{tok_info['vocab_len']}-{key.hexdigest()[:12]}")


def _hub_stories(split: str):
    """(count, iterator of story texts) of a split of HUB_DATASET, through the `datasets` library."""
    how = (f"To work offline, point the data at a local TinyStories text file (stories separated by "
           f"{EOT}): set TrainConfig(data_path=...), e.g. "
           f"`python train.py --data_path=../shared/data/tinystories_sample.txt`.")
    try:
        import datasets  # lazily: the project imports without it, and a local data_path never needs it
    except ImportError:
        raise DataSourceError(f"loading {HUB_DATASET} needs the `datasets` library "
                              f"(pip install datasets). {how}") from None
    try:
        ds = datasets.load_dataset(HUB_DATASET, split=HUB_SPLITS[split])
    except OSError as e:  # ConnectionError, offline mode, not found: all OSErrors in datasets/huggingface_hub
        raise DataSourceError(f"could not load {HUB_DATASET} (split {HUB_SPLITS[split]!r}) from the "
                              f"Hugging Face hub: {type(e).__name__}: {e}. {how}") from None

    def stories():
        for batch in ds.iter(batch_size=1000):
            for text in batch["text"]:
                text = (text or "").strip()
                if text:
                    yield text
    return len(ds), stories()


def _known_char(tok, ch: str) -> bool:
    """Whether the tokenizer encodes `ch` faithfully: it survives an encode-decode round trip."""
    return tok.decode(tok.encode(ch, bos=False, eos=False)) == ch


def _encode_stories(stories, tok) -> tuple[np.ndarray, dict, set]:
    """(ids, statistics, unknown characters) of stories: bos, the story's ids, eos for each, as uint16."""
    stats = {"stories": 0, "tokens": 0, "bytes": 0, "unknown_chars": 0}
    known, unknown, buf = set(), set(), []
    for story in stories:
        ids = tok.encode(story, bos=False, eos=False)
        buf.append(tok.bos_id)
        buf.extend(ids)
        buf.append(tok.eos_id)
        stats["stories"] += 1
        stats["tokens"] += len(ids) + 2
        stats["bytes"] += len(story.encode("utf-8"))
        for ch in set(story) - known:
            if ch in unknown or not _known_char(tok, ch):
                unknown.add(ch)
                stats["unknown_chars"] += story.count(ch)
            else:
                known.add(ch)
    return np.asarray(buf, dtype=np.uint16), stats, unknown


def _encode_chunk(job) -> tuple[np.ndarray, dict, set]:
    """_encode_stories in a worker process, with the tokenizer loaded there by name and size."""
    global TOKENIZERS_DIR
    folder, name, size, stories = job
    if (folder, name, size) not in _WORKER_TOKENIZERS:  # once per process, from the parent's tokenizers folder
        TOKENIZERS_DIR = folder
        _WORKER_TOKENIZERS[(folder, name, size)] = get_tokenizer(name, size)
    return _encode_stories(stories, _WORKER_TOKENIZERS[(folder, name, size)])


_WORKER_TOKENIZERS: dict = {}


def text_fingerprint(stories) -> str:
    """A short hash of a split's text, the stories in order: equal for two runs iff they read the same text, whatever
    their tokenizer. What a run records of its validation text (TrainConfig.val_text)."""
    h = hashlib.sha256()
    for story in stories:
        h.update(story.encode("utf-8") + b"\0")
    return h.hexdigest()[:12]


def _hashing(stories, h):
    """The stories, unchanged, each added to the hash `h` as it goes by (see text_fingerprint)."""
    for story in stories:
        h.update(story.encode("utf-8") + b"\0")
        yield story


def _chunks(stories, size: int):
    chunk = []
    for story in stories:
        chunk.append(story)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


CHUNK_STORIES = 2000  # stories per job of the tokenizing processes
PARALLEL_BYTES = 64 << 20  # every core from this much text on: 2 processes measured 1.40x at 105 MB, 0.72x at 21 MB


def tokenize_workers(requested: int | None, text_bytes: int | None) -> int:
    """How many processes tokenize: `requested`, or (None) one per core for texts of PARALLEL_BYTES or more, where
    starting them pays (each imports torch, about a second), else one."""
    if requested is not None:
        return max(1, requested)
    if text_bytes is not None and text_bytes < PARALLEL_BYTES:
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _write_split(path: str, stories, total: int, tok, desc: str, workers: int = 1,
                 tok_spec: tuple | None = None) -> dict:
    """Tokenize `stories` into `path` as bos ... eos per story; return the split's statistics. With workers > 1,
    chunks of stories are tokenized by that many processes (the tokenizer loaded in each from `tok_spec`,
    (tokenizers folder, name, size)) and written in order, so the ids are those of one process; one progress
    bar either way."""
    stats = {"stories": 0, "tokens": 0, "bytes": 0, "unknown_chars": 0}
    unknown = set()
    pool = None
    text_hash = hashlib.sha256()
    stories = _hashing(stories, text_hash)  # read in order in this process, whoever tokenizes
    if workers > 1 and tok_spec is not None:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
        size = max(16, min(CHUNK_STORIES, -(-total // (4 * workers))))  # at least 4 jobs a process
        results = pool.imap(_encode_chunk, ((*tok_spec, c) for c in _chunks(stories, size)))
    else:
        results = (_encode_stories(c, tok) for c in _chunks(stories, CHUNK_STORIES))
    try:
        with open(path, "wb") as f, tqdm(total=total, desc=desc, unit="story", dynamic_ncols=True) as bar:
            for ids, chunk_stats, chunk_unknown in results:
                ids.tofile(f)
                for k in stats:
                    stats[k] += chunk_stats[k]
                unknown |= chunk_unknown
                bar.update(chunk_stats["stories"])
    finally:
        if pool is not None:
            pool.terminate()
    if stats["stories"] == 0:
        raise DataSourceError(f"{desc}: no stories found")
    stats["bytes_per_token"] = stats["bytes"] / stats["tokens"]
    stats["unknown_char_set"] = "".join(sorted(unknown))
    stats["text_sha256"] = text_hash.hexdigest()[:12]
    return stats


def _build_cache(final: str, source: dict, tok, tok_info: dict, val_fraction: float,
                 workers: int | None = None) -> None:
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(final) + ".tmp-", dir=parent)
    try:
        if source["kind"] == "hub":
            splits = {s: _hub_stories(s) for s in SPLITS}
        else:
            files = _file_ids(source["train"])
            train = [story for f in files for story in read_stories(f["path"])]
            if "val" in source:
                val = read_stories(source["val"]["path"])
            else:
                train, val = split_stories(train, val_fraction)
            splits = {"train": (len(train), train), "val": (len(val), val)}
        meta = {"version": CACHE_VERSION, "dtype": "uint16", "source": source, "tokenizer": tok_info,
                "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        for split, (total, stories) in splits.items():
            n = tokenize_workers(workers, total * 900)  # TinyStories average about 900 bytes a story
            meta[split] = _write_split(os.path.join(tmp, f"{split}.bin"), stories, total, tok,
                                       f"tokenizing {split}" + (f" ({n} processes)" if n > 1 else ""), n,
                                       (TOKENIZERS_DIR, tok_info["name"], tok_info["vocab_len"]))
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
        try:
            os.rename(tmp, final)
        except OSError:  # another run finished the same cache first: keep theirs
            if not os.path.isfile(os.path.join(final, "meta.json")):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _open_cache(path: str, tok) -> TokenData | None:
    """The cache at `path`, or None if it is missing or does not match its meta.json."""
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        arrays = {s: np.memmap(os.path.join(path, f"{s}.bin"), dtype=np.uint16, mode="r") for s in SPLITS}
        if meta.get("version") != CACHE_VERSION or any(len(arrays[s]) != meta[s]["tokens"] for s in SPLITS):
            return None
    except (OSError, ValueError, RecursionError, LookupError, TypeError, AttributeError):  # damaged: rebuilt
        return None
    return TokenData(train=arrays["train"], val=arrays["val"], meta=meta, tokenizer=tok, path=path)


def get_data(mcfg, tcfg) -> TokenData:
    """The tokenized train and val splits for `mcfg.tokenizer` / `mcfg.vocab_len` and `tcfg`'s data.

    Source: `tcfg.data_path` (a text file of stories separated by <|endoftext|>, or several: a comma-separated
    list or globs, read in the order given, `resolve_data_paths`; the hub is never touched) with validation held
    out by `split_stories(stories, tcfg.val_fraction)` or read from
    `tcfg.val_data_path`; or, with no data_path, HUB_DATASET's train and validation splits. The first
    call tokenizes (with a progress bar) into the cache in `tcfg.data_cache_dir`; later calls with the
    same source file (path, size, mtime) and tokenizer reuse it. A relative data_path is looked up
    from the current directory, then from the repo root; a relative data_cache_dir is under the repo
    root. With no data_path and no network, DataSourceError says how to point at a local file.

    `meta[split]` holds, per split: `stories`; `tokens`, every id of the stream, bos and eos
    included; `bytes`, the UTF-8 bytes of the stories' text (stripped; separators not counted);
    `unknown_chars`, how many characters of the text the tokenizer cannot encode faithfully (they do
    not survive an encode-decode round trip; `unknown_char_set` lists them); `bytes_per_token = bytes / tokens`;
    and `text_sha256`, the split's `text_fingerprint`.

    Why all tokens, bos and eos included: bits per byte must be the nats the model spends on the
    stream over the bytes of text it covers. A window's next-token targets are consecutive ids of the
    stream, so over the stream every id is a target once (bar the very first bos): each eos (the
    model must predict where the story ends) and each bos after an eos (free to predict, ~0 nats,
    but still one of the positions an unmasked mean loss averages over). So with `ntp_loss` the mean
    cross-entropy in nats over next-token targets (pad masked, bos and eos not),
    total nats = ntp_loss * tokens, and bits_per_byte = ntp_loss / ln 2 * tokens / bytes
    = `bits_per_byte(ntp_loss, bytes_per_token)`. A loss that masks bos targets would need
    bytes / (tokens - stories) instead.
    """
    source = _source(tcfg)
    tok = get_tokenizer(mcfg.tokenizer, mcfg.vocab_len)
    tok_info = _tokenizer_info(tok, mcfg.tokenizer, mcfg.vocab_len)
    path = _cache_dir(tcfg, source, tok_info)
    data = _open_cache(path, tok)
    if data is None:
        if os.path.isdir(path):  # incomplete or stale (e.g. an older CACHE_VERSION): rebuild it
            shutil.rmtree(path)
        _build_cache(path, source, tok, tok_info, tcfg.val_fraction, getattr(tcfg, "tokenize_workers", None))
        data = _open_cache(path, tok)
        if data is None:
            raise RuntimeError(f"the data cache {path} was just built but does not open")
    return data










def describe_data(data: TokenData) -> str:
    """One line: the stories, megabytes and tokens of each split, and where they come from."""
    def files(entry):
        return [f["path"] for f in _file_ids(entry)]

    src = data.meta["source"]
    where = {"train": files(src["train"]) if src["kind"] == "file" else [src["dataset"]]}
    where["val"] = (files(src["val"]) if "val" in src else [f"the last {src['val_fraction']:.0%} of the training "
                                                               "stories"]) if src["kind"] == "file" else where["train"]
    return "; ".join(f"{split} {data.meta[split]['stories']:,} stories, {data.meta[split]['bytes'] / 1e6:.2f} MB, "
                     f"{data.meta[split]['tokens']:,} tokens ({', '.join(os.path.basename(w) for w in where[split])})"
                     for split in SPLITS)


def validation_label(tcfg, fingerprint: str | None) -> str:
    """How a run's validation text is named: its file (or the held-out share of its training files, or the hub's
    validation split) and its `text_fingerprint` ("?" where the text cannot be read any more)."""
    if tcfg.data_path is None:
        what = f"{HUB_DATASET} validation split"
    elif tcfg.val_data_path is not None:
        what = os.path.basename(tcfg.val_data_path)
    else:
        names = "+".join(os.path.basename(p) for p in tcfg.data_path.split(","))
        what = f"the held-out {tcfg.val_fraction:.0%} of {names}"
    return f"{what} #{fingerprint or '?'}"


def validation_text(data: TokenData, tcfg) -> str:
    """The validation text of `data` (loaded for `tcfg`) as a run records it (TrainConfig.val_text)."""
    return validation_label(tcfg, data.meta["val"].get("text_sha256"))


def read_validation_text(tcfg) -> str:
    """See _read_validation_text: the same, remembered per configuration and file versions."""
    files = [tcfg.val_data_path] if tcfg.val_data_path else (tcfg.data_path or "").split(",")
    versions = []
    for f in files:
        try:
            versions.append(os.stat(_resolve_data_path(f)).st_mtime_ns)
        except (OSError, ValueError):
            versions.append(None)
    return _read_validation_text(tcfg.data_path, tcfg.val_data_path, tcfg.val_fraction, tuple(versions))


@functools.lru_cache(maxsize=64)
def _read_validation_text(data_path, val_data_path, val_fraction, _versions) -> str:
    """The validation text of a saved run that did not record one (runs trained before val_text existed): its
    configured files read again and split as get_data splits them, so the fingerprint is the one get_data would
    record; "?" when the files are not here (or the text came from the hub)."""
    tcfg = SimpleNamespace(data_path=data_path, val_data_path=val_data_path, val_fraction=val_fraction)
    try:
        if tcfg.data_path is None:
            return validation_label(tcfg, None)
        if tcfg.val_data_path is not None:
            val = read_stories(_resolve_data_path(tcfg.val_data_path))
        else:
            train = [s for f in resolve_data_paths(tcfg.data_path) for s in read_stories(f)]
            val = split_stories(train, tcfg.val_fraction)[1]
    except (OSError, ValueError, DataSourceError):
        return validation_label(tcfg, None)
    return validation_label(tcfg, text_fingerprint(val))


def bits_per_byte(ntp_loss, bytes_per_token: float):
    """Bits per UTF-8 byte of text from a mean next-token loss in nats (see get_data for the counting).

    Comparable across tokenizers, unlike the loss itself: ntp_loss / ln 2 / bytes_per_token.
    """
    return ntp_loss / math.log(2) / bytes_per_token
