"""The data pipeline: raw stories -> tokenizer -> cached token ids -> batches, and bits per byte.

Data flows one way: text -> tokenizer -> cached token ids -> batches -> model. `get_data(model_cfg, train_cfg)`
gives a `TokenData` (both splits as token-id arrays, memory-mapped from the cache under data_cache/);
`get_batch` draws random training windows from it and `eval_batches` walks a split in fixed windows.
"""

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

import numpy as np
import torch
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
CACHE_VERSION = 1  # bump when the cache's content or layout changes: old caches are then ignored
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
    raise FileNotFoundError(f"data file {path!r} not found (looked relative to {os.getcwd()} and to "
                            f"{REPO_DIR}); it should be a text file of stories separated by {EOT}")


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
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION or any(len(arrays[s]) != meta[s]["tokens"] for s in SPLITS):
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
    not survive an encode-decode round trip; `unknown_char_set` lists them); and
    `bytes_per_token = bytes / tokens`.

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


# ---------------------------------------------------------------- batches


def _windows(stream: np.ndarray, starts: np.ndarray, seq_len: int, lookahead: int, pad_id: int):
    """(inputs, targets): stream[s : s+T] and stream[s+1 : s+T+H] for each start s, pad_id past the end."""
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(seq_len + lookahead)  # (B, T + H)
    inside = idx < len(stream)
    ids = np.asarray(stream[np.where(inside, idx, 0)], dtype=np.int64)
    ids[~inside] = pad_id
    inputs = torch.from_numpy(np.ascontiguousarray(ids[:, :seq_len]))  # (B, T)
    targets = torch.from_numpy(np.ascontiguousarray(ids[:, 1:]))  # (B, T + H - 1)
    return inputs, targets


def _check_window(stream: np.ndarray, split: str, seq_len: int, lookahead: int, min_len: int) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r} is not allowed: must be an int >= 1")
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
        raise ValueError(f"lookahead={lookahead!r} is not allowed: must be an int >= 1 (1 = next token only)")
    if len(stream) < min_len:
        raise ValueError(f"the {split} split has {len(stream)} tokens, too few for one window of "
                         f"seq_len={seq_len} inputs and their next-token targets")


def get_batch(data: TokenData, split: str, batch_size: int, seq_len: int, lookahead: int = 1,
              generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows of a split: (input_ids (B, T), target_ids (B, T + H - 1)), int64.

    `target_ids[:, i]` is the token after input i; the H - 1 columns past T continue the stream for
    the future-sight chunks of the last positions (H = `lookahead` = ModelConfig.lookahead; 1 for a
    plain GPT). Where they run past the end of the stream they hold pad_id (the loss leaves out any
    chunk containing pad or eos); the first T columns never do.

    Window starts are drawn uniformly from [0, len - T - 1], a range that depends on seq_len only,
    so a baseline and a FutureFormer given equally seeded generators read exactly the same inputs.
    `generator`: a torch.Generator or a numpy Generator (the same seed gives the same batches);
    None draws from torch's global generator.
    """
    stream = data.split(split)
    _check_window(stream, split, seq_len, lookahead, min_len=seq_len + 1)
    high = len(stream) - seq_len  # starts 0 .. len - T - 1: every next-token target lies in the stream
    if isinstance(generator, np.random.Generator):
        starts = generator.integers(0, high, size=batch_size)
    else:
        device = generator.device if generator is not None else "cpu"
        starts = torch.randint(high, (batch_size,), generator=generator, device=device).cpu().numpy()
    return _windows(stream, starts, seq_len, lookahead, data.pad_id)


def eval_batches(data: TokenData, split: str, batch_size: int, seq_len: int, lookahead: int = 1,
                 drop_last: bool = False):
    """Yield batches covering the whole split in fixed windows, deterministically, in stream order.

    Window j holds inputs stream[jT : jT + T], targets as in get_batch (same layout). The windows do
    not overlap and every id of the stream but the first is a next-token target exactly once. The
    last window is usually partial: its inputs and targets past the end are pad_id, so the NTP loss
    must ignore pad targets (cross_entropy ignore_index=pad_id), and to average over the split weigh
    each batch's mean loss by its count of real targets, `(targets[:, :T] != pad_id).sum()`.
    `drop_last=True` instead leaves out that partial window (fewer than T targets), so no input or
    NTP target is ever pad. The last batch may have fewer than `batch_size` rows.
    """
    stream = data.split(split)
    _check_window(stream, split, seq_len, lookahead, min_len=seq_len + 1 if drop_last else 2)
    n = len(stream)
    starts = np.arange(0, n - seq_len if drop_last else n - 1, seq_len)
    for i in range(0, len(starts), batch_size):
        yield _windows(stream, starts[i:i + batch_size], seq_len, lookahead, data.pad_id)


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


def bits_per_byte(ntp_loss, bytes_per_token: float):
    """Bits per UTF-8 byte of text from a mean next-token loss in nats (see get_data for the counting).

    Comparable across tokenizers, unlike the loss itself: ntp_loss / ln 2 / bytes_per_token.
    """
    return ntp_loss / math.log(2) / bytes_per_token
