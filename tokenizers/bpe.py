"""Character-level byte-pair encoding, shared by tokenizers/bpe_v1 and tokenizers/bpe_v2.

Data flow step: text -> token ids (and back). This file holds the trainer (`learn_merges`), the
encoder (class `Tokenizer`) and the JSON model format; the folders only say how text is split
before merging (bpe_v1: not at all, bpe_v2: the GPT-4 pattern) and where their models live.

- Base alphabet: the characters of the training text (not bytes), ids 0..A-1 in code-point order.
- Merge r (r = 0, 1, ...) joins the adjacent pair (left id, right id) into the new id A + r, so an
  id's number is also its merge rank. A tokenizer of size n uses the first n - A merges; every size
  is a prefix of the next.
- Encoding is true BPE: repeatedly merge the adjacent pair with the lowest rank (leftmost first).
  That is the same as applying the merges in the order they were learned, each to all of its
  occurrences left to right, which is how both encoders here compute it.
- Special ids come right after the vocabulary: bos = vocab_len, eos = vocab_len + 1,
  pad = vocab_len + 2.
- Characters outside the alphabet are dropped before encoding and counted in
  `Tokenizer.unknown_chars` (a Counter: character -> times dropped). So encode(s) == encode(s with
  them removed), and text made of alphabet characters round-trips exactly.

This file is loaded by path (see tokenizers/load.py), never as `tokenizers.bpe`: a package named
`tokenizers` would shadow the Hugging Face library of that name.
"""

import heapq
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import chain, repeat
from pathlib import Path

import regex

# The GPT-4 (cl100k_base) pre-tokenization pattern: contractions, letter runs with one leading
# non-letter, numbers of up to 3 digits, punctuation runs, newlines, and whitespace.
GPT4_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SIZES = (128, 256, 512, 1024, 2048, 4096, 8192)  # built besides the alphabet alone ("chars")
SPECIALS = ("<bos>", "<eos>", "<pad>")  # ids vocab_len, vocab_len + 1, vocab_len + 2
FORMAT = "futureformer-char-bpe-1"  # the "format" field of a model file
MODEL_FIELDS = {"name": str, "vocab_len": int, "specials": dict, "pattern": (str, type(None)), "trained_on": dict,
                "alphabet": list, "merges": list}  # what a model file holds, and of which type
MAX_MODEL_BYTES = 64 << 20  # an 8192-token model is about 200 KB
MAX_VOCAB = 65_533  # ids (and bos, eos, pad after them) must fit the uint16 token cache
MAX_TOKEN_CHARS = 1 << 24  # all tokens together; the 8192-token models hold about 100,000 characters
MAX_JSON_DEPTH = 8  # a model file nests 3 levels (the merges); anything deeper is not one

_SHIFT = 20  # a pair (a, b) is keyed as a << _SHIFT | b while training (ids below 2**20)
_CACHE_LIMIT = 1 << 20  # pieces kept in an encoder's cache before it starts afresh
_NO_MERGE = 1 << 62  # the rank of a pair that is no merge


# ---------------------------------------------------------------- training


def learn_merges(counts: Mapping[str, int], num_tokens: int) -> tuple[list[str], list[tuple[int, int]]]:
    """(alphabet, merges) learned from `counts`: text sequence -> how many times it occurs.

    bpe_v1 passes whole stories (merges may form across any characters, never across stories);
    bpe_v2 passes the pre-token pieces of the training text with their frequencies. Learns up to
    `num_tokens - len(alphabet)` merges (fewer if the text runs out of pairs). Each step merges the
    most frequent adjacent pair, ties going to the smallest (left id, right id); counts overlap
    naively ("aaa" holds two "aa") but merging goes left to right, as encoding does.

    All sequences lie end to end in one doubly linked list of positions, and every merge updates
    the pair counts around the positions it touches, so a step costs time in proportion to the
    occurrences it merges, not to the length of the text.
    """
    if num_tokens >= 1 << _SHIFT:
        raise ValueError(f"num_tokens={num_tokens} is too many: ids must stay below {1 << _SHIFT}")
    alphabet = sorted({c for seq in counts for c in seq})
    char_id = {c: i for i, c in enumerate(alphabet)}
    tok: list[int] = []  # token id at each position; -1 once merged into its left neighbour
    nxt: list[int] = []  # next live position in the same sequence, -1 at its end
    prv: list[int] = []  # previous live position, -1 at its start
    weight: list[int] = []  # how many times the position's sequence occurs
    for seq, w in counts.items():
        start, n = len(tok), len(seq)
        if n == 0:
            continue
        tok.extend(map(char_id.__getitem__, seq))
        nxt.extend(range(start + 1, start + n + 1))
        nxt[-1] = -1
        prv.extend(range(start - 1, start + n - 1))
        prv[start] = -1
        weight.extend([w] * n)

    count: dict[int, int] = {}  # pair key -> weighted number of adjacent occurrences
    where: dict[int, list[int]] = {}  # pair key -> positions where it formed (some stale later)
    for p, q in enumerate(nxt):
        if q >= 0:
            key = tok[p] << _SHIFT | tok[q]
            count[key] = count.get(key, 0) + weight[p]
            where.setdefault(key, []).append(p)
    heap = [(-c, key) for key, c in count.items()]  # entries whose count is out of date are skipped
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    mask = (1 << _SHIFT) - 1
    changed: set[int] = set()  # the pairs whose count a merge step changed

    def add(x: int, y: int, w: int, p: int = -1) -> None:  # count pair (x, y) w more times, formed at p
        k = x << _SHIFT | y
        count[k] = count.get(k, 0) + w
        changed.add(k)
        if p >= 0:
            where.setdefault(k, []).append(p)

    while len(merges) < num_tokens - len(alphabet) and heap:
        neg, key = heapq.heappop(heap)
        if count.get(key) != -neg:
            continue
        a, b, new = key >> _SHIFT, key & mask, len(alphabet) + len(merges)
        merges.append((a, b))
        changed.clear()
        for p in sorted(where.pop(key)):  # left to right, as encoding does
            q = nxt[p]
            if tok[p] != a or q < 0 or tok[q] != b:  # stale, or overlapped by the previous merge
                continue
            w, x, y = weight[p], prv[p], nxt[q]
            if x >= 0:
                add(tok[x], a, -w)
                add(tok[x], new, w, x)
            if y >= 0:
                add(b, tok[y], -w)
                add(new, tok[y], w, p)
            tok[p], tok[q], nxt[p] = new, -1, y
            if y >= 0:
                prv[y] = p
        del count[key]  # every occurrence is merged now
        changed.discard(key)
        for k in changed:
            c = count[k]
            if c > 0:
                heapq.heappush(heap, (-c, k))
            else:
                del count[k]
                where.pop(k, None)
    return alphabet, merges


# ---------------------------------------------------------------- encoding


class Tokenizer:
    """A character-level BPE tokenizer: `encode`, `decode`, `display`, `expand_token`.

    `pattern` None: merges may form across any characters (bpe_v1). Otherwise the text is first
    cut into pieces by that regex (bpe_v2), merges stay inside pieces and each piece's encoding is
    cached, so a repeated word costs a dict look-up.
    """

    def __init__(self, alphabet: list[str], merges: Iterable[tuple[int, int]], pattern: str | None = None,
                 name: str = "bpe", trained_on: dict | None = None):
        self.alphabet = list(alphabet)
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self.name = name
        self.trained_on = trained_on or {}
        self.vocab_len = self.size = len(self.alphabet) + len(self.merges)
        self.bos_id, self.eos_id, self.pad_id = self.vocab_len, self.vocab_len + 1, self.vocab_len + 2
        self.unknown_chars: Counter = Counter()  # character -> how many times encode dropped it

        if len(set(self.alphabet)) != len(self.alphabet) or any(len(c) != 1 for c in self.alphabet):
            raise ValueError("the alphabet must be distinct single characters")
        if self.vocab_len > MAX_VOCAB:
            raise ValueError(f"{self.vocab_len:,} tokens are more than the {MAX_VOCAB:,} the token cache can hold")
        # Every token's length first, as numbers: merges that chain (each joining the previous token) would
        # build strings whose total length grows with the square of the chain, or doubles at each merge; so the
        # strings are built only when all of them together stay within MAX_TOKEN_CHARS.
        lengths, total = [1] * len(self.alphabet), len(self.alphabet)
        for new, (a, b) in enumerate(self.merges, len(self.alphabet)):
            if not (0 <= a < new and 0 <= b < new):
                raise ValueError(f"merge {new - len(self.alphabet)}: ({a}, {b}) uses an undefined id")
            lengths.append(lengths[a] + lengths[b])
            total += lengths[-1]
            if total > MAX_TOKEN_CHARS:
                raise ValueError(f"merge {new - len(self.alphabet)}: ({a}, {b}) brings the tokens' length, all "
                                 f"together, past {MAX_TOKEN_CHARS:,} characters: merges that chain like these are "
                                 "not a tokenizer, and would fill the memory")
        self._tokens = list(self.alphabet)  # id -> string
        for a, b in self.merges:
            self._tokens.append(self._tokens[a] + self._tokens[b])
        self._alphabet_set = frozenset(self.alphabet)
        # Token ids written as characters, chr(id), so that applying a merge to a whole text is
        # one str.replace of a 2-character string (which replaces left to right, leftmost first).
        self._id_chars = str.maketrans({c: chr(i) for i, c in enumerate(self.alphabet)})
        self._merge_strs = [(chr(a) + chr(b), chr(new))
                            for new, (a, b) in enumerate(self.merges, len(self.alphabet))]
        self._pair_rank = {pair: ord(new) for pair, new in self._merge_strs}  # "ab" as id chars -> new id
        if len(self._pair_rank) != len(self.merges):
            raise ValueError("the same pair is merged twice")
        self._split = regex.compile(pattern).findall if pattern is not None else None
        self._cache = _PieceCache(self._encode_piece)

    # -- loading and saving

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """A tokenizer from a JSON model file (see `to_json`). The file is checked before anything is built
        from it: its size, that it is JSON of this format, and every field's type; any failure is one
        ValueError naming the file and what is wrong."""
        path = Path(path)
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ValueError(f"{path} is {size:,} bytes, more than a tokenizer model file can be "
                             f"({MAX_MODEL_BYTES:,})")
        try:
            model = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a JSON tokenizer model file ({type(e).__name__}: {e})") from None
        except (RecursionError, ValueError) as e:  # nested past Python's limit; an integer too long to convert
            raise ValueError(f"{path} is not a tokenizer model file ({type(e).__name__})") from None
        if _depth(model) > MAX_JSON_DEPTH:
            raise ValueError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a tokenizer model file")
        if not isinstance(model, dict) or model.get("format") != FORMAT:
            raise ValueError(f"{path} is not a tokenizer model file of format {FORMAT!r}")
        for key, kind in MODEL_FIELDS.items():
            if key not in model or not isinstance(model[key], kind) or isinstance(model[key], bool):
                raise ValueError(f"{path}: field {key!r} must be {kind}, "
                                 f"is {type(model.get(key)).__name__ if key in model else 'missing'}")
        if not all(isinstance(c, str) for c in model["alphabet"]):
            raise ValueError(f"{path}: the alphabet must be a list of characters")
        if not all(isinstance(m, list) and len(m) == 2 and all(type(i) is int for i in m) for m in model["merges"]):
            raise ValueError(f"{path}: every merge must be a pair of integer ids [left, right]")
        try:
            tokenizer = cls(model["alphabet"], model["merges"], model["pattern"], model["name"],
                            model["trained_on"])
        except (ValueError, TypeError, OverflowError, regex.error) as e:
            raise ValueError(f"{path}: {e}") from None
        if tokenizer.vocab_len != model["vocab_len"] or model["specials"] != tokenizer._specials():
            raise ValueError(f"{path}: vocab_len or specials do not match its alphabet and merges")
        return tokenizer

    def to_json(self) -> str:
        """The model file: alphabet, merges in order ([left id, right id], one a line) and metadata."""
        head = {"format": FORMAT, "name": self.name, "vocab_len": self.vocab_len,
                "specials": self._specials(),
                "pattern": self.pattern, "trained_on": self.trained_on, "alphabet": self.alphabet}
        lines = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
        merges = ",\n".join(f"    [{a}, {b}]" for a, b in self.merges)
        return "{\n" + "\n".join(lines) + '\n  "merges": [\n' + merges + ("\n" if merges else "") + "  ]\n}\n"

    def truncated(self, size: int) -> "Tokenizer":
        """The same tokenizer cut to `size` tokens: the alphabet and the first size - A merges."""
        if not len(self.alphabet) <= size <= self.vocab_len:
            raise ValueError(f"size {size} must be between {len(self.alphabet)} and {self.vocab_len}")
        return Tokenizer(self.alphabet, self.merges[: size - len(self.alphabet)], self.pattern, self.name,
                         self.trained_on)

    # -- the interface

    def encode(self, text: str, bos: bool = True, eos: bool = False, pad: int | None = None) -> list[int]:
        """Token ids of `text`, with bos first and eos last if asked, right-padded with pad_id to
        length `pad` if given (ValueError if the ids are longer than that)."""
        text = self._drop_unknown(text)
        ids = [self.bos_id] if bos else []
        if self._split is None:
            ids.extend(self._merge_text(text))
        else:
            ids.extend(chain.from_iterable(map(self._cache.__getitem__, self._split(text))))
        if eos:
            ids.append(self.eos_id)
        if pad is not None:
            if len(ids) > pad:
                raise ValueError(f"{len(ids)} token ids do not fit in pad={pad}")
            ids.extend([self.pad_id] * (pad - len(ids)))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`. bos, eos and pad are skipped (they stand for no text; `display` and
        `expand_token` show them); an id outside 0..pad_id raises ValueError."""
        tokens, n = self._tokens, self.vocab_len
        out = []
        for i in ids:
            i = int(i)
            if 0 <= i < n:
                out.append(tokens[i])
            elif not n <= i <= self.pad_id:
                raise ValueError(f"token id {i} is outside 0..{self.pad_id}")
        return "".join(out)

    def expand_token(self, id: int) -> str:
        """The string of one token; the specials as <bos>, <eos>, <pad>."""
        id = int(id)
        if 0 <= id < self.vocab_len:
            return self._tokens[id]
        if self.vocab_len <= id <= self.pad_id:
            return SPECIALS[id - self.vocab_len]
        raise ValueError(f"token id {id} is outside 0..{self.pad_id}")

    def display(self, text: str, bos: bool = False, eos: bool = False) -> str:
        """How `text` is cut into tokens: the tokens separated by '|', newlines shown as \\n;
        e.g. 'Once| upon| a| time' for "Once upon a time" (bpe_v2, size 1024)."""
        return "|".join(self.expand_token(i).replace("\n", "\\n") for i in self.encode(text, bos, eos))

    def _specials(self) -> dict[str, int]:
        return dict(zip(SPECIALS, (self.bos_id, self.eos_id, self.pad_id), strict=True))

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_len={self.vocab_len})"

    # -- internals

    def _drop_unknown(self, text: str) -> str:
        chars = set(text)
        if chars <= self._alphabet_set:
            return text
        unknown = chars - self._alphabet_set
        for c in unknown:
            self.unknown_chars[c] += text.count(c)
        return text.translate(dict.fromkeys(map(ord, unknown)))

    def _merge_text(self, text: str) -> list[int]:
        """True BPE of a whole text: each merge in rank order, applied to all its occurrences left
        to right by one str.replace on the text written as id characters. Merges whose two ids do
        not occur in the text are skipped without a pass."""
        s = text.translate(self._id_chars)
        present = set(s)  # a superset of the ids in s: merged-away ids are not removed
        for pair, new in self._merge_strs:
            if pair[0] in present and pair[1] in present:
                merged = s.replace(pair, new)
                if len(merged) != len(s):
                    s = merged
                    present.add(new)
        return list(map(ord, s))

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        """True BPE of a short piece: merge the lowest-rank adjacent pair (all its occurrences,
        left to right) until no adjacent pair is a merge. Works on the piece written as id
        characters, so that each step is a few calls into C."""
        s, rank = piece.translate(self._id_chars), self._pair_rank
        while len(s) > 1:
            new = min(map(rank.get, map(str.__add__, s, s[1:]), repeat(_NO_MERGE)))
            if new == _NO_MERGE:
                break
            s = s.replace(self._merge_strs[new - len(self.alphabet)][0], chr(new))
        return tuple(map(ord, s))


def _depth(value) -> int:
    """How deeply lists and dicts nest in a JSON value (0 for a number or a string), without recursion. The same as
    files.json_depth: this file is loaded by path on its own (tokenizers/<name>/tokenizer.py) and imports nothing
    of the repository, so it keeps its own copy."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return depth


class _PieceCache(dict):
    """piece -> its token ids, computed on first sight; cleared when it grows past _CACHE_LIMIT."""

    def __init__(self, encode_piece):
        super().__init__()
        self._encode_piece = encode_piece

    def __missing__(self, piece: str) -> tuple[int, ...]:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        ids = self[piece] = self._encode_piece(piece)
        return ids


# ---------------------------------------------------------------- the models of one folder


def available_sizes(models_dir: str | Path) -> list[int]:
    """The sizes that have a model file `<size>.json` in `models_dir`, smallest (the alphabet) first."""
    return sorted(int(p.stem) for p in Path(models_dir).glob("*.json") if p.stem.isdigit())


def load_size(models_dir: str | Path, size: int | str) -> Tokenizer:
    """The tokenizer `<size>.json` of `models_dir`; size "chars" is the alphabet alone (the smallest
    file). A size without a file raises ValueError listing the available ones."""
    sizes = available_sizes(models_dir)
    if size == "chars" and sizes:
        size = sizes[0]
    elif isinstance(size, str) and size.isdigit():
        size = int(size)
    if isinstance(size, bool) or size not in sizes:
        raise ValueError(f"tokenizer size {size!r} is not available in {models_dir}: choose one of {sizes} "
                         f"or 'chars' (the alphabet alone, {sizes[0] if sizes else 'none built'})")
    return Tokenizer.load(Path(models_dir) / f"{int(size)}.json")
