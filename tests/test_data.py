"""The data pipeline of tools.py: tokenizer loading, the token cache, batches, bits per byte.

Most tests use a character-level stand-in tokenizer written into a temporary tokenizers/ folder, so
they run in a second; the tests marked `real` use tokenizers/bpe_v2 on the TinyStories sample.
Caches always go to tmp_path, never into the repository.
"""

import math
import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import data as data_module  # `data` is the fixtures' name for a TokenData
import tools
from config import TrainConfig

# A character-level tokenizer with the project's interface: printable ASCII and newline are known;
# any other character is encoded as "?" (so it does not survive a round trip: an unknown character).
STAND_IN = textwrap.dedent('''
    import string

    ALPHABET = "\\n" + "".join(chr(c) for c in range(32, 127))


    class CharTokenizer:
        def __init__(self, size):
            assert size >= len(ALPHABET)
            self.vocab_len = size
            self.bos_id, self.eos_id, self.pad_id = size, size + 1, size + 2
            self.stoi = {c: i for i, c in enumerate(ALPHABET)}

        def encode(self, text, bos=True, eos=False, pad=None):
            ids = [self.stoi.get(c, self.stoi["?"]) for c in text]
            ids = ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])
            if pad is not None:
                ids += [self.pad_id] * (pad - len(ids))
            return ids

        def decode(self, ids):
            return "".join(ALPHABET[i] for i in ids if i < len(ALPHABET))


    def get_tokenizer(size):
        return CharTokenizer(size)
''')
CHAR_SIZE = 96  # len(ALPHABET)

REAL_NAME, REAL_SIZE = "bpe_v2", 1024
HAVE_SAMPLE = os.path.isfile(tools.SAMPLE_PATH)
needs_sample = pytest.mark.skipif(not HAVE_SAMPLE,
                                  reason=f"TinyStories sample not found at {tools.SAMPLE_PATH}")
HAVE_REAL = os.path.isfile(os.path.join(tools.TOKENIZERS_DIR, REAL_NAME, "tokenizer.py")) and any(
    f.split(".")[0] == str(REAL_SIZE)
    for f in os.listdir(os.path.join(tools.TOKENIZERS_DIR, REAL_NAME, "models"))
) if os.path.isdir(os.path.join(tools.TOKENIZERS_DIR, REAL_NAME, "models")) else False
needs_real = pytest.mark.skipif(not (HAVE_SAMPLE and HAVE_REAL),
                                reason=f"needs the sample and tokenizers/{REAL_NAME}/models/{REAL_SIZE}.*")


def make_stories(n: int, seed: int = 0) -> list[str]:
    """n short, distinct stories (ASCII only, several lines, one with an unknown character)."""
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "Lily", "Tom", "ran", "far", "away", "happy", "dog"]
    out = []
    for i in range(n):
        body = " ".join(rng.choice(words, size=int(rng.integers(5, 30))))
        out.append(f"Story {i}: {body}.\nThe end of {i}!")
    out[3] += " Café."  # one unknown character for the stand-in
    return out


def write_raw(path, stories) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for s in stories:
            f.write(s + "\n" + tools.EOT + "\n")
    return str(path)


@pytest.fixture
def char_tok(tmp_path, monkeypatch):
    """data.TOKENIZERS_DIR pointed at a folder holding only the stand-in tokenizer `chartest`."""
    folder = tmp_path / "tokenizers" / "chartest"
    folder.mkdir(parents=True)
    (folder / "tokenizer.py").write_text(STAND_IN)
    monkeypatch.setattr(data_module, "TOKENIZERS_DIR", str(tmp_path / "tokenizers"))
    return SimpleNamespace(tokenizer="chartest", vocab_len=CHAR_SIZE)


@pytest.fixture
def stories():
    return make_stories(120)


@pytest.fixture
def tcfg(tmp_path, stories):
    return TrainConfig(data_path=write_raw(tmp_path / "stories.txt", stories),
                       data_cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def count_builds(monkeypatch):
    """Counts the splits tokenized (calls of data._write_split)."""
    calls = []
    real = data_module._write_split

    def counting(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data_module, "_write_split", counting)
    return calls


def story_ids(stream, bos, eos) -> list[list[int]]:
    """The stories of a stream, checking that each is exactly bos ... eos."""
    ids = np.asarray(stream).tolist()
    out, i = [], 0
    while i < len(ids):
        assert ids[i] == bos, f"story at {i} does not start with bos"
        j = ids.index(eos, i)
        assert bos not in ids[i + 1:j]
        out.append(ids[i + 1:j])
        i = j + 1
    return out


def toy_data(n: int = 20, pad: int = 999) -> tools.TokenData:
    """A TokenData over the streams 0..n-1 (train) and 100..100+n-1 (val)."""
    meta = {"tokenizer": {"pad_id": pad}}
    return tools.TokenData(train=np.arange(n, dtype=np.uint16), val=np.arange(100, 100 + n, dtype=np.uint16),
                           meta=meta, tokenizer=None)


# ---------------------------------------------------------------- tokenizer loading


def test_get_tokenizer_loads_by_path(char_tok):
    tok = tools.get_tokenizer("chartest", 100)
    assert (tok.vocab_len, tok.bos_id, tok.eos_id, tok.pad_id) == (100, 100, 101, 102)
    assert tok.decode(tok.encode("Hi there", bos=False)) == "Hi there"
    # loaded under a private name: the repo's tokenizers/ folder never becomes the module `tokenizers`
    hf = sys.modules.get("tokenizers")
    assert hf is None or "site-packages" in str(getattr(hf, "__file__", ""))


def test_get_tokenizer_unknown_name_lists_known(char_tok):
    with pytest.raises(ValueError, match=r"nope.*chartest"):
        tools.get_tokenizer("nope", 100)


@pytest.mark.slow
def test_import_datasets_with_repo_root_first_on_path(tmp_path):
    """The top-level tokenizers/ folder (no __init__.py) must not shadow or break anything."""
    folder = tmp_path / "tokenizers" / "chartest"
    folder.mkdir(parents=True)
    (folder / "tokenizer.py").write_text(STAND_IN)
    real = f"tools.get_tokenizer({REAL_NAME!r}, {REAL_SIZE}).vocab_len" if HAVE_REAL else "None"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {data_module.REPO_DIR!r})
        import datasets
        ds = datasets.Dataset.from_dict({{"text": ["a", "b"]}})
        assert ds["text"] == ["a", "b"] and callable(datasets.load_dataset)
        import data
        import tools
        print("real", {real})
        data.TOKENIZERS_DIR = {str(tmp_path / "tokenizers")!r}
        print("stand-in", tools.get_tokenizer("chartest", 96).vocab_len)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=data_module.REPO_DIR, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "stand-in 96" in out.stdout
    if HAVE_REAL:
        assert f"real {REAL_SIZE}" in out.stdout


# ---------------------------------------------------------------- the cache


def test_cache_built_once_then_reused(char_tok, tcfg, count_builds):
    a = tools.get_data(char_tok, tcfg)
    assert sorted(count_builds) == ["train.bin", "val.bin"]
    assert a.path.startswith(str(tcfg.data_cache_dir)) and os.path.isfile(os.path.join(a.path, "meta.json"))
    mtime = os.stat(os.path.join(a.path, "train.bin")).st_mtime_ns
    b = tools.get_data(char_tok, tcfg)
    assert len(count_builds) == 2, "the second call tokenized again instead of reusing the cache"
    assert b.path == a.path and os.stat(os.path.join(a.path, "train.bin")).st_mtime_ns == mtime
    assert isinstance(b.train, np.memmap) and b.train.dtype == np.uint16 and b.val.dtype == np.uint16
    np.testing.assert_array_equal(a.train, b.train)
    assert b.meta == a.meta
    assert os.listdir(tcfg.data_cache_dir) == [os.path.basename(a.path)]  # no temp folders left


def test_relative_cache_dir_is_relative_to_repo_root(char_tok, tcfg, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    rel = TrainConfig(data_path=tcfg.data_path, data_cache_dir="some/where")
    path = data_module._cache_dir(rel, data_module._source(rel), {"name": "x", "vocab_len": 1})
    assert path.startswith(os.path.join(data_module.REPO_DIR, "some", "where") + os.sep)


def test_cache_key_changes_with_tokenizer_size_and_source(char_tok, tcfg, count_builds, stories, tmp_path):
    base = tools.get_data(char_tok, tcfg).path
    bigger = tools.get_data(SimpleNamespace(tokenizer="chartest", vocab_len=128), tcfg)
    assert bigger.path != base and "chartest-128" in os.path.basename(bigger.path)
    assert bigger.meta["tokenizer"]["bos_id"] == 128 and int(bigger.train[0]) == 128
    other_frac = tools.get_data(char_tok, TrainConfig(data_path=tcfg.data_path, val_fraction=0.2,
                                                      data_cache_dir=tcfg.data_cache_dir))
    assert other_frac.path != base
    write_raw(tcfg.data_path, stories[:-1])  # the file changed: size and mtime
    changed = tools.get_data(char_tok, tcfg)
    assert changed.path != base and changed.meta["train"]["stories"] + changed.meta["val"]["stories"] == 119
    assert len(count_builds) == 8  # four caches, two splits each: none was wrongly reused


def test_rebuilt_tokenizer_gets_a_fresh_cache(char_tok, tcfg, tmp_path, monkeypatch):
    base = tools.get_data(char_tok, tcfg)
    # the same name and size, but it encodes differently ("?" for unknown characters becomes "#")
    folder = tmp_path / "other" / "chartest"
    folder.mkdir(parents=True)
    (folder / "tokenizer.py").write_text(STAND_IN.replace('self.stoi["?"]', 'self.stoi["#"]'))
    monkeypatch.setattr(data_module, "TOKENIZERS_DIR", str(tmp_path / "other"))
    rebuilt = tools.get_data(char_tok, tcfg)
    assert rebuilt.path != base.path
    assert rebuilt.meta["tokenizer"]["fingerprint"] != base.meta["tokenizer"]["fingerprint"]
    assert os.path.basename(rebuilt.path).startswith("stories-chartest-96-")


def test_interrupted_build_leaves_no_cache(char_tok, tcfg, monkeypatch):
    real = data_module._write_split

    def dies_on_val(path, *args, **kwargs):
        if path.endswith("val.bin"):
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data_module, "_write_split", dies_on_val)
    with pytest.raises(KeyboardInterrupt):
        tools.get_data(char_tok, tcfg)
    assert os.listdir(tcfg.data_cache_dir) == []  # neither a cache nor a temp folder
    monkeypatch.setattr(data_module, "_write_split", real)
    data = tools.get_data(char_tok, tcfg)
    assert len(data.val) == data.meta["val"]["tokens"] > 0


def test_cache_appears_complete_in_one_rename(char_tok, tcfg, monkeypatch):
    renames = []
    real = os.rename

    def recording(src, dst):
        renames.append((str(src), str(dst), sorted(os.listdir(src)) if os.path.isdir(src) else None))
        return real(src, dst)

    monkeypatch.setattr(os, "rename", recording)
    data = tools.get_data(char_tok, tcfg)
    ours = [r for r in renames if r[1].startswith(str(tcfg.data_cache_dir))]
    assert ours == [(ours[0][0], data.path, ["meta.json", "train.bin", "val.bin"])]
    assert os.path.dirname(ours[0][0]) == os.path.dirname(data.path)  # a sibling temp folder


def test_damaged_cache_is_rebuilt(char_tok, tcfg, count_builds):
    data = tools.get_data(char_tok, tcfg)
    with open(os.path.join(data.path, "train.bin"), "r+b") as f:
        f.truncate(10)
    again = tools.get_data(char_tok, tcfg)
    assert len(count_builds) == 4 and len(again.train) == data.meta["train"]["tokens"]


# ---------------------------------------------------------------- what is in the cache


def test_stories_wrapped_in_bos_eos_and_val_held_out(char_tok, tcfg, stories):
    data = tools.get_data(char_tok, tcfg)
    tok = data.tokenizer
    train_ref, val_ref = tools.split_stories(stories, tcfg.val_fraction)
    assert len(val_ref) == 6 and data.meta["val"]["stories"] == 6 and data.meta["train"]["stories"] == 114
    decoded = {s: [tok.decode(ids) for ids in story_ids(data.split(s), tok.bos_id, tok.eos_id)]
               for s in tools.SPLITS}
    expect = {s: [x.replace("é", "?") for x in ref] for s, ref in (("train", train_ref), ("val", val_ref))}
    assert decoded == expect  # every story, in order, each bos ... eos
    assert not set(decoded["train"]) & set(decoded["val"])
    # deterministic: a fresh build elsewhere gives the very same bytes
    again = tools.get_data(char_tok, TrainConfig(data_path=tcfg.data_path,
                                                 data_cache_dir=tcfg.data_cache_dir + "2"))
    np.testing.assert_array_equal(again.val, data.val)
    np.testing.assert_array_equal(again.train, data.train)


def test_separate_val_file(char_tok, tmp_path, stories):
    val_stories = make_stories(7, seed=1)
    cfg = TrainConfig(data_path=write_raw(tmp_path / "train.txt", stories),
                      val_data_path=write_raw(tmp_path / "val.txt", val_stories),
                      data_cache_dir=str(tmp_path / "cache"))
    data = tools.get_data(char_tok, cfg)
    tok = data.tokenizer
    assert data.meta["train"]["stories"] == len(stories) and data.meta["val"]["stories"] == 7
    decoded = [tok.decode(i) for i in story_ids(data.val, tok.bos_id, tok.eos_id)]
    assert decoded == [s.replace("é", "?") for s in val_stories]
    assert data.meta["source"]["val"]["path"] == os.path.realpath(tmp_path / "val.txt")


def test_val_file_without_data_path_is_rejected(char_tok, tmp_path):
    cfg = TrainConfig(val_data_path=write_raw(tmp_path / "v.txt", ["a", "b"]), data_cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="val_data_path"):
        tools.get_data(char_tok, cfg)


def test_missing_data_file_says_so(char_tok, tmp_path, monkeypatch):
    """The message names the file and where it was looked for: nowhere else for an absolute path, each folder once
    for a relative one."""
    with pytest.raises(FileNotFoundError, match=r"'[^']*no_such.txt' not found; it should be"):
        tools.get_data(char_tok, TrainConfig(data_path=str(tmp_path / "no_such.txt")))
    monkeypatch.chdir(data_module.REPO_DIR)
    with pytest.raises(FileNotFoundError, match=rf"not found \(looked relative to {re.escape(os.getcwd())}\);"):
        tools.get_data(char_tok, TrainConfig(data_path="no_such.txt"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"\(looked relative to {re.escape(str(tmp_path))} and to "
                                                rf"{re.escape(data_module.REPO_DIR)}\)"):
        tools.get_data(char_tok, TrainConfig(data_path="no_such.txt"))


def test_several_training_files_in_the_order_given(char_tok, tmp_path, stories, count_builds):
    """data_path takes a comma-separated list and globs: the stories of every file, in the order given (a glob's
    matches sorted), cached under a key that covers every file; describe_data names them."""
    a = write_raw(tmp_path / "a.txt", stories[:50])
    b = write_raw(tmp_path / "b.txt", stories[50:])
    val = write_raw(tmp_path / "val.txt", make_stories(5, seed=2))
    cache = str(tmp_path / "cache")

    def get(spec):
        data = tools.get_data(char_tok, TrainConfig(data_path=spec, val_data_path=val, data_cache_dir=cache))
        tok = data.tokenizer
        return data, [tok.decode(i) for i in story_ids(data.train, tok.bos_id, tok.eos_id)]

    want = [s.replace("é", "?") for s in stories]
    ab, decoded = get(f"{a}, {b}")
    assert decoded == want and ab.meta["train"]["stories"] == 120
    assert [f["path"] for f in ab.meta["source"]["train"]] == [os.path.realpath(a), os.path.realpath(b)]
    assert "a.txt, b.txt" in tools.describe_data(ab) and "val 5 stories" in tools.describe_data(ab)
    glob_ab, decoded = get(str(tmp_path / "[ab].txt"))
    assert decoded == want and glob_ab.path == ab.path  # the same files in the same order: the same cache
    ba, decoded = get(f"{b},{a}")
    assert decoded == want[50:] + want[:50] and ba.path != ab.path
    builds = len(count_builds)
    write_raw(b, stories[50:-1])  # the second file changed: a new cache
    changed, decoded = get(f"{a},{b}")
    assert changed.path != ab.path and decoded == want[:-1] and len(count_builds) == builds + 2


def test_bad_data_paths_say_which(char_tok, tmp_path, stories):
    a = write_raw(tmp_path / "a.txt", stories)
    (tmp_path / "folder").mkdir()
    cases = [(f"{a},{tmp_path / 'gone.txt'}", FileNotFoundError, "gone.txt"),
             (str(tmp_path / "*.json"), FileNotFoundError, r"\*\.json' matches no file"),
             (str(tmp_path / "folder"), FileNotFoundError, "is a directory"),
             (f"{a},{tmp_path / '*.txt'}", ValueError, "a.txt more than once"),
             (" , ", FileNotFoundError, "names no file")]
    for spec, error, message in cases:
        with pytest.raises(error, match=message):
            tools.get_data(char_tok, TrainConfig(data_path=spec, data_cache_dir=str(tmp_path / "cache")))
    b = write_raw(tmp_path / "b.txt", stories)
    for val in (a, f"{tmp_path}/./a.txt"):  # the training text, in any form, as the validation text
        with pytest.raises(ValueError, match="is also a training file"):
            data_module.check_separate_validation(TrainConfig(data_path=f"{b},{a}", val_data_path=val))
    data_module.check_separate_validation(TrainConfig(data_path=str(b), val_data_path=str(a)))
    tools.get_data(char_tok, TrainConfig(data_path=str(a), val_data_path=str(a),  # scoring reads one text so
                                         data_cache_dir=str(tmp_path / "cache")))  # (train.py checks first)


def test_meta_counts_bytes_tokens_unknowns(char_tok, tcfg, stories):
    data = tools.get_data(char_tok, tcfg)
    train_ref, _ = tools.split_stories(stories, tcfg.val_fraction)
    m = data.meta["train"]
    assert m["tokens"] == len(data.train) == sum(len(s) + 2 for s in train_ref)  # one id per char + bos, eos
    assert m["bytes"] == sum(len(s.encode("utf-8")) for s in train_ref)
    assert m["bytes_per_token"] == pytest.approx(m["bytes"] / m["tokens"])
    assert m["unknown_chars"] == 1 and m["unknown_char_set"] == "é"
    assert data.meta["val"]["unknown_chars"] == 0


@needs_sample
def test_bytes_per_token_on_sample(char_tok, tmp_path):
    cfg = TrainConfig(data_path=tools.SAMPLE_PATH, data_cache_dir=str(tmp_path / "cache"))
    data = tools.get_data(char_tok, cfg)
    train, val = tools.split_stories(tools.read_stories(tools.SAMPLE_PATH), cfg.val_fraction)
    for split, ref in (("train", train), ("val", val)):
        m = data.meta[split]
        chars = sum(len(s) for s in ref)
        assert m["stories"] == len(ref) and m["tokens"] == chars + 2 * len(ref)
        # a char-level tokenizer: about one byte per token (a little more for multi-byte UTF-8,
        # a little less for the two wrapper tokens per story)
        assert m["bytes_per_token"] == pytest.approx(m["bytes"] / m["tokens"])
        assert 0.98 < m["bytes_per_token"] < 1.0
        non_ascii = sum(1 for s in ref for c in s if ord(c) > 126)
        assert m["unknown_chars"] == non_ascii
    assert data.meta["train"]["unknown_chars"] > 0


# ---------------------------------------------------------------- the hub


def test_hub_path_calls_load_dataset(char_tok, tmp_path, monkeypatch, count_builds):
    datasets = pytest.importorskip("datasets")
    calls = []
    texts = {"train": ["  First story.\n", "", "Second story."], "validation": ["A held-out one."]}

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        return datasets.Dataset.from_dict({"text": texts[split]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = TrainConfig(data_cache_dir=str(tmp_path / "cache"))
    data = tools.get_data(char_tok, cfg)
    assert sorted(calls) == [("noanabeshima/TinyStoriesV2", "train"),
                             ("noanabeshima/TinyStoriesV2", "validation")]
    tok = data.tokenizer
    assert [tok.decode(i) for i in story_ids(data.train, tok.bos_id, tok.eos_id)] == ["First story.",
                                                                                       "Second story."]
    assert [tok.decode(i) for i in story_ids(data.val, tok.bos_id, tok.eos_id)] == ["A held-out one."]
    assert data.meta["source"]["dataset"] == "noanabeshima/TinyStoriesV2"
    assert os.path.basename(data.path).startswith("TinyStoriesV2-chartest-96-")
    tools.get_data(char_tok, cfg)
    assert len(calls) == 2 and len(count_builds) == 2  # the cache is reused without touching the hub


def test_hub_offline_gives_clear_error(char_tok, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(name, split=None, **kwargs):
        raise ConnectionError("Couldn't reach 'noanabeshima/TinyStoriesV2' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    cache = tmp_path / "cache"
    with pytest.raises(tools.DataSourceError) as err:
        tools.get_data(char_tok, TrainConfig(data_cache_dir=str(cache)))
    msg = str(err.value)
    assert "data_path" in msg and "python train.py --data_path=" in msg and "Couldn't reach" in msg
    assert err.value.__suppress_context__ and err.value.__cause__ is None  # no library stack trace
    assert not cache.exists() or os.listdir(cache) == []


# ---------------------------------------------------------------- batches


@pytest.fixture
def data(char_tok, tcfg):
    return tools.get_data(char_tok, tcfg)


def test_batch_shapes_dtypes_and_lookahead(data):
    B, T, H = 4, 16, 15
    inputs, targets = tools.get_batch(data, "train", B, T, H, torch.Generator().manual_seed(0))
    assert inputs.shape == (B, T) and targets.shape == (B, T + H - 1)
    assert inputs.dtype == targets.dtype == torch.int64
    # the documented rule: starts uniform on [0, len - T - 1], drawn from the generator
    starts = torch.randint(len(data.train) - T, (B,), generator=torch.Generator().manual_seed(0))
    stream = torch.from_numpy(data.train.astype(np.int64))
    for b, s in enumerate(starts.tolist()):
        assert torch.equal(inputs[b], stream[s:s + T])
        assert torch.equal(targets[b], stream[s + 1:s + T + H])  # next token, then the look-ahead
    assert torch.equal(targets[:, :T - 1], inputs[:, 1:])


def test_lookahead_past_the_end_is_pad():
    data = toy_data(20)
    T, H = 8, 15
    inputs, targets = tools.get_batch(data, "val", 300, T, H, np.random.default_rng(0))
    starts = inputs[:, 0] - 100
    assert starts.min() == 0 and starts.max() == 20 - T - 1  # every start, the last full window included
    assert (targets[:, :T] != 999).all()  # next-token targets are always real
    for b in range(300):
        s = int(starts[b])
        expect = [100 + i if i < 20 else 999 for i in range(s + 1, s + T + H)]
        assert targets[b].tolist() == expect


def test_same_seed_same_batches(data):
    for make in (lambda s: torch.Generator().manual_seed(s), np.random.default_rng):
        g1, g2, g3 = make(7), make(7), make(8)
        a = [tools.get_batch(data, "train", 8, 32, 15, g1) for _ in range(3)]
        b = [tools.get_batch(data, "train", 8, 32, 15, g2) for _ in range(3)]
        c = [tools.get_batch(data, "train", 8, 32, 15, g3) for _ in range(3)]
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))
        assert not torch.equal(a[0][0], a[1][0])  # successive batches differ too


def test_baseline_and_futureformer_see_the_same_windows(data):
    g_base, g_fs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    T = 24
    for _ in range(5):  # stays in step batch after batch: drawing does not depend on the look-ahead
        x1, y1 = tools.get_batch(data, "train", 6, T, 1, g_base)
        x15, y15 = tools.get_batch(data, "train", 6, T, 15, g_fs)
        assert torch.equal(x1, x15)
        assert y1.shape == (6, T) and y15.shape == (6, T + 14)
        assert torch.equal(y1, y15[:, :T])


def test_bad_batch_arguments(data):
    with pytest.raises(ValueError, match="split"):
        tools.get_batch(data, "test", 2, 8, 1)
    with pytest.raises(ValueError, match="lookahead"):
        tools.get_batch(data, "train", 2, 8, 0)
    with pytest.raises(ValueError, match="too few"):
        tools.get_batch(toy_data(10), "train", 2, 10, 1)
    with pytest.raises(ValueError, match="too few"):
        next(tools.eval_batches(toy_data(10), "train", 2, 10, 1, drop_last=True))
    (x, y), = tools.eval_batches(toy_data(10), "train", 2, 10, 1)  # one padded window is fine
    assert x[0].tolist() == list(range(10)) and y[0].tolist() == list(range(1, 10)) + [999]


# ---------------------------------------------------------------- evaluation batches


@pytest.mark.parametrize("n", [20, 17, 18])  # (n - 1) % T: 3, 0, 1
def test_eval_batches_cover_the_split(n):
    data = toy_data(n)
    T, H, pad = 4, 3, 999
    batches = list(tools.eval_batches(data, "train", 2, T, H))
    windows = math.ceil((n - 1) / T)
    assert sum(len(x) for x, _ in batches) == windows and all(len(x) <= 2 for x, _ in batches)
    inputs = torch.cat([x for x, _ in batches])
    targets = torch.cat([y for _, y in batches])
    assert inputs.shape == (windows, T) and targets.shape == (windows, T + H - 1)
    assert inputs[:, 0].tolist() == list(range(0, windows * T, T))  # fixed, non-overlapping windows
    real_inputs = inputs[inputs != pad].tolist()
    real_targets = targets[:, :T][targets[:, :T] != pad].tolist()
    assert real_targets == list(range(1, n))  # every id but the first is a next-token target once
    assert real_inputs == list(range(0, len(real_inputs)))
    assert torch.equal(targets[:, :T - 1], inputs[:, 1:])
    for row in range(windows):  # the look-ahead continues the stream, pad past its end
        s = row * T
        assert targets[row].tolist() == [i if i < n else pad for i in range(s + 1, s + T + H)]


def test_eval_batches_drop_last_and_determinism(data):
    T = 32
    full = list(tools.eval_batches(data, "val", 4, T, 15, drop_last=True))
    again = list(tools.eval_batches(data, "val", 4, T, 15, drop_last=True))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full, again, strict=True))
    n = len(data.val)
    inputs = torch.cat([x for x, _ in full])
    targets = torch.cat([y for _, y in full])
    assert len(inputs) == (n - 1) // T
    assert (inputs != data.pad_id).all() and (targets[:, :T] != data.pad_id).all()
    kept = list(tools.eval_batches(data, "val", 4, T, 15))
    assert sum(len(x) for x, _ in kept) == math.ceil((n - 1) / T)


# ---------------------------------------------------------------- bits per byte


def test_bits_per_byte():
    assert tools.bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)
    assert tools.bits_per_byte(2.0, 4.0) == pytest.approx(2.0 / math.log(2) / 4.0)
    t = tools.bits_per_byte(torch.tensor(math.log(2) * 3), 1.5)
    assert isinstance(t, torch.Tensor) and t.item() == pytest.approx(2.0)


# ---------------------------------------------------------------- the real tokenizer


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    from config import ModelConfig

    mcfg = ModelConfig(tokenizer=REAL_NAME, vocab_len=REAL_SIZE)
    tcfg = TrainConfig(data_path=tools.SAMPLE_PATH, data_cache_dir=str(tmp_path_factory.mktemp("cache")))
    return mcfg, tcfg, tools.get_data(mcfg, tcfg)


@needs_real
def test_real_tokenizer_cache(real_data):
    mcfg, tcfg, data = real_data
    tok = data.tokenizer
    assert tok.vocab_len == REAL_SIZE and data.pad_id == REAL_SIZE + 2
    assert int(data.train.max()) <= tok.eos_id
    train, val = tools.split_stories(tools.read_stories(tools.SAMPLE_PATH), tcfg.val_fraction)
    val_ids = story_ids(data.val, tok.bos_id, tok.eos_id)
    assert len(val_ids) == len(val) == data.meta["val"]["stories"]
    assert tok.decode(val_ids[0]) == val[0] and tok.decode(val_ids[-1]) == val[-1]
    # bytes per token: what the tokenizer does on the split's text, plus bos and eos per story
    m = data.meta["val"]
    text_tokens = sum(len(tok.encode(s, bos=False)) for s in val)
    assert m["tokens"] == text_tokens + 2 * len(val)
    assert m["bytes"] == sum(len(s.encode("utf-8")) for s in val)
    assert 2.5 < m["bytes_per_token"] < 5.0  # ~3.3 for a 1024-token BPE on TinyStories
    assert m["bytes_per_token"] == pytest.approx(m["bytes"] / text_tokens, rel=0.02)  # wrappers: < 1%
    joined = "\n".join(val)  # chars per token of the tokenizer on plain text
    assert m["bytes_per_token"] == pytest.approx(len(joined.encode()) / len(tok.encode(joined, bos=False)),
                                                 rel=0.02)
    assert m["unknown_chars"] == 0  # the sample's characters are all in the alphabet


@needs_real
def test_real_batches_with_model_config(real_data):
    mcfg, tcfg, data = real_data
    g = torch.Generator().manual_seed(0)
    x, y = tools.get_batch(data, "train", 3, mcfg.max_seq_len, mcfg.lookahead, g)
    assert x.shape == (3, mcfg.max_seq_len) and y.shape == (3, mcfg.max_seq_len + mcfg.lookahead - 1)
    assert x.max() < mcfg.vocab_size and y.max() < mcfg.vocab_size


# ---------------------------------------------------------------- tokenizing in parallel


@pytest.mark.slow
def test_parallel_tokenizing_gives_the_ids_of_one_process(tmp_path, monkeypatch):
    """Two processes tokenize the sample's chunks (small chunks, so that both work) into the same cache layout
    and exactly the same ids and statistics as one process."""
    monkeypatch.setattr(data_module, "CHUNK_STORIES", 150)
    mcfg = SimpleNamespace(tokenizer="bpe_v2", vocab_len=1024)
    path = write_raw(tmp_path / "stories.txt", tools.read_stories(tools.SAMPLE_PATH)[:600]) if HAVE_SAMPLE else \
        write_raw(tmp_path / "stories.txt", make_stories(600))
    one = tools.get_data(mcfg, TrainConfig(data_path=path, data_cache_dir=str(tmp_path / "one"), tokenize_workers=1))
    two = tools.get_data(mcfg, TrainConfig(data_path=path, data_cache_dir=str(tmp_path / "two"), tokenize_workers=2))
    for split in tools.SPLITS:
        assert np.array_equal(one.split(split), two.split(split))
        assert {k: v for k, v in one.meta[split].items()} == {k: v for k, v in two.meta[split].items()}
    assert data_module.tokenize_workers(None, 2_000_000) == 1 and data_module.tokenize_workers(3, 10) == 3
    assert data_module.tokenize_workers(None, 1 << 30) >= 1


@pytest.mark.slow
def test_hub_path_tokenizes_in_parallel_with_a_local_stand_in(char_tok, tmp_path, monkeypatch):
    """The hub path up to the point where it would go online: a stand-in for load_dataset, tokenized by two
    processes (which load the stand-in tokenizer from the same folder), equals one process."""
    datasets = pytest.importorskip("datasets")
    texts = {"train": make_stories(300), "validation": make_stories(40)}
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda name, split=None, **kw: datasets.Dataset.from_dict({"text": texts[split]}))
    monkeypatch.setattr(data_module, "CHUNK_STORIES", 64)
    one = tools.get_data(char_tok, TrainConfig(data_cache_dir=str(tmp_path / "one"), tokenize_workers=1))
    two = tools.get_data(char_tok, TrainConfig(data_cache_dir=str(tmp_path / "two"), tokenize_workers=2))
    for split in tools.SPLITS:
        assert np.array_equal(one.split(split), two.split(split)) and len(one.split(split)) > 1000
