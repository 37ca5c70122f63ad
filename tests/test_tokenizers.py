"""The character-level BPE tokenizers: tokenizers/bpe.py, load.py, build.py and bpe_v1/, bpe_v2/.

Everything is loaded by file path, as the rest of the project does (a package named `tokenizers`
would shadow the Hugging Face library). The real models are the committed ones, trained on the
train split of ../shared/data/tinystories_sample.txt; round trips use its held-out stories.
"""

import hashlib
import json
import random
import subprocess
import sys
import textwrap
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import regex

import tools

REPO_DIR = Path(tools.REPO_DIR)
TOKENIZERS_DIR = REPO_DIR / "tokenizers"
NAMES = ["bpe_v1", "bpe_v2"]
ALPHABET_LEN = 87  # the characters of the sample's train split
ALL_SIZES = [ALPHABET_LEN, 128, 256, 512, 1024, 2048, 4096, 8192]


load = tools.load_module(TOKENIZERS_DIR / "load.py", "futureformer_tokenizers_load")  # the names build.py uses
build = tools.load_module(TOKENIZERS_DIR / "build.py", "futureformer_tokenizers_build")
bpe = load.tokenizer_module("bpe_v2").bpe


@pytest.fixture(scope="module")
def split():
    return tools.split_stories(tools.read_stories(tools.SAMPLE_PATH), 0.05)


@pytest.fixture(scope="module")
def val(split):
    return split[1]


def reference_bpe(tok, text):
    """True BPE by its definition, slowly: merge the single leftmost adjacent pair of lowest rank,
    one at a time, until none is a merge (pieces of bpe_v2 encoded one by one)."""
    rank = {pair: new for new, pair in enumerate(tok.merges, len(tok.alphabet))}
    out = []
    for piece in regex.findall(tok.pattern, text) if tok.pattern else [text]:
        ids = [tok.alphabet.index(c) for c in piece]
        while True:
            ranks = [(rank.get(pair, float("inf")), i) for i, pair in enumerate(pairwise(ids))]
            best, i = min(ranks, default=(float("inf"), 0))
            if best == float("inf"):
                break
            ids[i : i + 2] = [best]
        out.extend(ids)
    return out


def naive_learn(counts, num_tokens):
    """The BPE trainer by its definition: recount every pair each step, merge the most frequent
    (ties: smallest (left, right) ids) everywhere, left to right."""
    alphabet = sorted(set("".join(counts)))
    seqs = [([alphabet.index(c) for c in s], w) for s, w in counts.items()]
    merges = []
    while len(alphabet) + len(merges) < num_tokens:
        pairs = Counter()
        for ids, w in seqs:
            for pair in pairwise(ids):
                pairs[pair] += w
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        new = len(alphabet) + len(merges)
        merges.append(best)
        for ids, _ in seqs:
            i = 0
            while i < len(ids) - 1:
                if (ids[i], ids[i + 1]) == best:
                    ids[i : i + 2] = [new]
                i += 1
    return alphabet, merges


# ---------------------------------------------------------------- BPE itself, on hand-sized examples


def test_training_by_hand():
    # "aaabdaaabac": "aa" occurs 4 times (overlaps count), merged left to right: aa a b d aa a b a c;
    # then "ab" and "aa"+"a" both occur twice, the tie goes to the smaller ids (a, b) = (0, 1);
    # then aa+ab = "aaab" twice; then every pair once, the smallest is (a, c) = (0, 2).
    alphabet, merges = bpe.learn_merges({"aaabdaaabac": 1}, 8)
    assert alphabet == ["a", "b", "c", "d"]
    assert merges == [(0, 0), (0, 1), (4, 5), (0, 2)]
    tok = bpe.Tokenizer(alphabet, merges)
    assert [tok.expand_token(i) for i in range(4, 8)] == ["aa", "ab", "aaab", "ac"]
    # frequencies weigh: "ba" twice beats "ab" once
    assert bpe.learn_merges({"ab": 1, "ba": 2}, 3) == (["a", "b"], [(1, 0)])


@pytest.mark.parametrize("pattern", [None, bpe.GPT4_PATTERN])
def test_true_bpe_by_hand(pattern):
    tok = bpe.Tokenizer(["a", "b", "c", "d", " "], [(0, 0), (0, 1), (5, 6)], pattern)  # aa, ab, aaab
    assert tok.display("aaabdaaabac") == "aaab|d|aaab|a|c"
    assert tok.display("aaa") == "aa|a"  # leftmost first
    assert tok.display("aaaab") == "aa|aa|b"  # aa twice first, then no "ab" is left: not "a|aaab"
    assert tok.display("abaa") == "ab|aa"  # "aa" merges before "ab", and ab+aa is no merge
    assert tok.display("aab") == "aa|b"  # not "a|ab": rank decides, not position
    # merges cross a space only without pre-tokenization
    tok = bpe.Tokenizer(["a", "b", " "], [(0, 2), (3, 1)], pattern)  # "a ", "a b"
    assert tok.display("a b") == ("a| |b" if pattern else "a b")  # pieces "a", " b"


def test_incremental_trainer_matches_the_definition(split):
    stories = split[0][:8]
    pieces = Counter(p for s in stories for p in regex.findall(bpe.GPT4_PATTERN, s))
    for counts, n in [(Counter(stories), 250), (pieces, 300), ({"aaaaaaa": 3, "abababa": 2, "ba": 5}, 9)]:
        assert bpe.learn_merges(counts, n) == naive_learn(counts, n)


def test_encoders_match_the_definition(val):
    random.seed(0)
    for name in NAMES:
        for size in [256, 1024, 8192]:
            tok = load.get_tokenizer(name, size)
            texts = [s[:400] for s in val[:3]] + ["".join(random.choices("aeht n.\n", k=300))]
            for text in texts:
                assert tok.encode(text, bos=False) == reference_bpe(tok, text)
            # the whole-text and the per-piece encoders agree (both are used: bpe_v1 / bpe_v2)
            assert tok._merge_text(texts[0]) == list(tok._encode_piece(texts[0]))


# ---------------------------------------------------------------- the committed models


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_on_held_out_stories(name, val):
    for size in ["chars", 128, 1024, 8192]:
        tok = load.get_tokenizer(name, size)
        for story in val[:40]:
            ids = tok.encode(story, bos=False)
            assert tok.decode(ids) == story
            assert all(0 <= i < tok.vocab_len for i in ids)
        assert not tok.unknown_chars
    assert load.get_tokenizer(name, "chars").encode("Hi!", bos=False) == [
        load.get_tokenizer(name, "chars").alphabet.index(c) for c in "Hi!"]


@pytest.mark.parametrize("name", NAMES)
def test_sizes_are_nested_prefixes(name, val):
    module = load.tokenizer_module(name)
    assert module.available_sizes() == ALL_SIZES
    toks = [module.get_tokenizer(size) for size in ALL_SIZES]
    text = val[0]
    for small, large in pairwise(toks):
        assert small.alphabet == large.alphabet
        assert large.merges[: len(small.merges)] == small.merges and len(large.merges) > len(small.merges)
        assert [small.expand_token(i) for i in range(small.vocab_len)] == [
            large.expand_token(i) for i in range(small.vocab_len)]
        assert len(large.encode(text)) <= len(small.encode(text))  # more merges never cut finer here
    assert len({toks[-1].expand_token(i) for i in range(8192)}) == 8192  # no token string twice


def test_bpe_v2_merges_stay_inside_pieces_and_bpe_v1_cross_them():
    v2 = load.get_tokenizer("bpe_v2", 8192)
    tokens = [v2.expand_token(i) for i in range(v2.vocab_len)]
    assert all(regex.findall(bpe.GPT4_PATTERN, t) == [t] for t in tokens)
    v1 = load.get_tokenizer("bpe_v1", 8192)
    assert "Once upon a time" in v1.expand_token(v1.encode("Once upon a time, there was", bos=False)[0])


@pytest.mark.slow
def test_compression_improves_with_size_and_meets_target(val):
    text = "\n".join(val)
    for name in NAMES:
        per_token = [len(text) / len(load.get_tokenizer(name, size).encode(text, bos=False))
                     for size in ALL_SIZES]
        assert per_token[0] == 1.0 and per_token == sorted(per_token)
    assert len(text) / len(load.get_tokenizer("bpe_v2", 1024).encode(text, bos=False)) >= 3.0


@pytest.mark.parametrize("name", NAMES)
def test_model_files_are_json_with_metadata(name):
    data_sha = hashlib.sha256(Path(tools.SAMPLE_PATH).read_bytes()).hexdigest()
    n_train = len(tools.split_stories(tools.read_stories(tools.SAMPLE_PATH), 0.05)[0])
    files = sorted((TOKENIZERS_DIR / name / "models").iterdir())
    assert sorted(int(f.stem) for f in files) == ALL_SIZES and all(f.suffix == ".json" for f in files)
    for f in files:
        model = json.loads(f.read_text(encoding="utf-8"))
        assert model["format"] == bpe.FORMAT and model["name"] == name and model["vocab_len"] == int(f.stem)
        assert len(model["alphabet"]) + len(model["merges"]) == int(f.stem)
        assert model["pattern"] == load.tokenizer_module(name).PATTERN
        trained_on = model["trained_on"]
        assert trained_on["file"] == "tinystories_sample.txt" and trained_on["sha256"] == data_sha
        assert trained_on["stories"] == n_train and "val_fraction=0.05" in trained_on["split"]
        assert model["specials"] == {"<bos>": int(f.stem), "<eos>": int(f.stem) + 1, "<pad>": int(f.stem) + 2}
    assert not [p for p in TOKENIZERS_DIR.rglob("*") if p.suffix in (".pkl", ".pickle", ".model", ".pt")]
    assert not (TOKENIZERS_DIR / "__init__.py").exists()


# ---------------------------------------------------------------- the interface


@pytest.mark.parametrize("name", NAMES)
def test_special_ids_and_encode_options(name):
    for size in ["chars", 1024]:
        tok = load.get_tokenizer(name, size)
        n = tok.vocab_len
        assert (tok.bos_id, tok.eos_id, tok.pad_id) == (n, n + 1, n + 2)
        body = tok.encode("The cat sat.", bos=False)
        assert tok.encode("The cat sat.") == [n] + body
        assert tok.encode("The cat sat.", bos=True, eos=True) == [n] + body + [n + 1]
        padded = tok.encode("The cat sat.", eos=True, pad=len(body) + 5)
        assert padded == [n] + body + [n + 1, n + 2, n + 2, n + 2]
        assert tok.encode("The cat sat.", eos=True, pad=len(body) + 2) == [n] + body + [n + 1]  # exactly full
        with pytest.raises(ValueError, match="pad"):
            tok.encode("The cat sat.", eos=True, pad=len(body) + 1)
        assert tok.decode(padded) == "The cat sat."  # specials stand for no text
        assert tok.decode(np.array(padded, dtype=np.int64)) == "The cat sat."  # e.g. from a tensor
        assert tok.encode("", bos=False) == [] and tok.decode([]) == ""
        with pytest.raises(ValueError, match="outside"):
            tok.decode([n + 3])
        with pytest.raises(ValueError, match="outside"):
            tok.decode([-1])


@pytest.mark.parametrize("name", NAMES)
def test_unknown_characters_are_dropped_and_counted(name):
    tok = load.get_tokenizer(name, 1024)
    assert "☃" not in tok.alphabet and "ï" not in tok.alphabet
    ids = tok.encode("A snow☃man, naïve☃!", bos=False)
    assert ids == tok.encode("A snowman, nave!", bos=False)
    assert tok.decode(ids) == "A snowman, nave!"
    assert tok.unknown_chars == Counter({"☃": 2, "ï": 1})
    tok.encode("☃")
    assert tok.unknown_chars["☃"] == 3  # counted over the tokenizer's life
    assert load.get_tokenizer(name, 1024).unknown_chars == Counter()  # each tokenizer its own count


def test_display_and_expand_token():
    tok = load.get_tokenizer("bpe_v2", 1024)
    assert tok.display("Once upon a time") == "Once| upon| a| time"
    assert tok.display("Hi.\nBye", bos=True, eos=True) == "<bos>|H|i|.\\n|B|y|e|<eos>"  # ".\\n" is one piece
    assert [tok.expand_token(i) for i in (tok.bos_id, tok.eos_id, tok.pad_id)] == ["<bos>", "<eos>", "<pad>"]
    assert tok.expand_token(tok.encode("Once", bos=False)[0]) == "Once"
    assert tok.expand_token(tok.alphabet.index("z")) == "z"
    for bad in (-1, tok.pad_id + 1):
        with pytest.raises(ValueError, match="outside"):
            tok.expand_token(bad)
    assert (tok.name, tok.size) == ("bpe_v2", 1024)


def test_bad_size_or_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"1000.*\[87, 128, 256, 512, 1024, 2048, 4096, 8192\].*chars"):
        load.get_tokenizer("bpe_v2", 1000)
    for bad in ["words", True, None, 1024.5]:
        with pytest.raises(ValueError, match="choose one of"):
            load.get_tokenizer("bpe_v1", bad)
    with pytest.raises(ValueError, match=r"bpe_v3.*\['bpe_v1', 'bpe_v2'\]"):
        load.get_tokenizer("bpe_v3", 1024)
    assert load.get_tokenizer("bpe_v2", "chars").vocab_len == ALPHABET_LEN
    assert load.get_tokenizer("bpe_v2", "512").vocab_len == 512  # as a command line would pass it
    assert load.tokenizer_module("bpe_v2").get_tokenizer(256).vocab_len == 256


@pytest.mark.slow
def test_import_datasets_then_load_by_path_and_no_shadowing(tmp_path):
    """With the repo root first on sys.path `import datasets` works, the tokenizer then loads by path,
    and a real `tokenizers` package later on the path still wins over the repo's folder (the stand-in made here, or
    Hugging Face's library where requirements-export.txt installed it)."""
    fake = tmp_path / "site" / "tokenizers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("HF = True\n")
    code = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path.insert(0, {str(REPO_DIR)!r})
        import datasets
        assert datasets.Dataset.from_dict({{"text": ["a"]}})["text"] == ["a"]
        spec = importlib.util.spec_from_file_location("ff_load", {str(TOKENIZERS_DIR / "load.py")!r})
        load = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(load)
        tok = load.get_tokenizer("bpe_v2", 1024)
        print(tok.vocab_len, tok.decode(tok.encode("Once upon a time")))
        v1_path = {str(TOKENIZERS_DIR / "bpe_v1" / "tokenizer.py")!r}
        spec = importlib.util.spec_from_file_location("v1", v1_path)
        v1 = importlib.util.module_from_spec(spec)  # a tokenizer.py on its own, from another directory
        spec.loader.exec_module(v1)
        print(v1.get_tokenizer(128).display("the end"))
        sys.path.append({str(tmp_path / "site")!r})
        sys.modules.pop("tokenizers", None)
        import tokenizers
        where = getattr(tokenizers, "__file__", None) or ""  # None for the repo's folder, a namespace package
        real = getattr(tokenizers, "HF", False) or (where and not where.startswith({str(TOKENIZERS_DIR)!r}))
        print("hf" if real else tokenizers)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    v1 = load.get_tokenizer("bpe_v1", 128).display("the end")
    assert out.stdout.splitlines() == ["1024 Once upon a time", v1, "hf"]


# ---------------------------------------------------------------- building


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, split):
    path = tmp_path_factory.mktemp("data") / "small.txt"
    stories = split[0][:40]
    path.write_text("".join(f"{s}\n{tools.EOT}\n" for s in stories), encoding="utf-8")
    return path, stories


def test_build_writes_every_size_deterministically(tmp_path, small_data):
    path, stories = small_data
    written = build.build("bpe_v2", path, 0.05, tmp_path / "a", sizes=[128, 256])
    alphabet_len = len(set("".join(stories[:38])))  # the last 2 of 40 stories are held out
    assert list(written) == [alphabet_len, 128, 256]
    tok = bpe.Tokenizer.load(written[256])
    assert tok.trained_on["stories"] == 38 and tok.trained_on["file"] == "small.txt"
    assert tok.merges == bpe.learn_merges(
        Counter(p for s in stories[:38] for p in regex.findall(bpe.GPT4_PATTERN, s)), 256)[1]
    again = build.build("bpe_v2", path, 0.05, tmp_path / "b", sizes=[128, 256])
    assert all(written[s].read_bytes() == again[s].read_bytes() for s in written)
    with pytest.raises(ValueError, match="fewer than the size"):
        build.build("bpe_v1", path, 0.05, tmp_path / "c", sizes=[10**6])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_build_notebook_runs(name, tmp_path, small_data):
    papermill = pytest.importorskip("papermill")
    out_dir = tmp_path / "models"
    papermill.execute_notebook(str(TOKENIZERS_DIR / name / "build.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"data_path": str(small_data[0]), "out_dir": str(out_dir),
                                           "sizes": [128]},
                               cwd=str(TOKENIZERS_DIR / name), progress_bar=False, kernel_name="python3")
    sizes = sorted(int(p.stem) for p in out_dir.glob("*.json"))
    assert len(sizes) == 2 and sizes[1] == 128
    assert bpe.Tokenizer.load(out_dir / "128.json").pattern == load.tokenizer_module(name).PATTERN
