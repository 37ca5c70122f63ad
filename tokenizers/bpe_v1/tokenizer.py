"""bpe_v1: character-level BPE whose merges may form across any characters (no pre-tokenization).

    tokenizer = get_tokenizer(1024)      # or "chars", 128, 256, ..., 8192: see available_sizes()
    ids = tokenizer.encode("Once upon a time", bos=True, eos=False, pad=None)
    tokenizer.decode(ids), tokenizer.display("Once upon a time"), tokenizer.expand_token(ids[1])

Works when loaded by file path (as tokenizers/load.py does): it finds ../bpe.py by path, not by
`import tokenizers...`, since a package of that name would shadow the Hugging Face library.
The models are models/<size>.json; README.md says what they were trained on and how to rebuild.
"""

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _import_shared_bpe():
    """tokenizers/bpe.py, loaded by path once per process (under one name, shared by all folders)."""
    name = "futureformer_tokenizers_bpe"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _HERE.parent / "bpe.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bpe = _import_shared_bpe()
NAME = _HERE.name
PATTERN = None  # no pre-tokenization: merges may cross spaces and punctuation
MODELS_DIR = _HERE / "models"


def available_sizes() -> list[int]:
    """Sizes with a model file, the alphabet alone first."""
    return bpe.available_sizes(MODELS_DIR)


def get_tokenizer(size: int | str) -> "bpe.Tokenizer":
    """The tokenizer of `size` tokens (bos, eos, pad not counted) or "chars" for the alphabet alone.
    ValueError listing the available sizes if there is no such model."""
    return bpe.load_size(MODELS_DIR, size)
