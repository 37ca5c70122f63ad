"""The project-wide tokenizer loader: `get_tokenizer(name, size)`, for a folder of tokenizers/.

Load this file by path, never with `import tokenizers.load`: a package named `tokenizers` on
sys.path would shadow the Hugging Face library of that name (which `datasets` or `transformers`
may import), so this folder deliberately has no __init__.py.

    import importlib.util
    spec = importlib.util.spec_from_file_location("futureformer_tokenizers_load", "tokenizers/load.py")
    load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)
    tokenizer = load.get_tokenizer("bpe_v2", 1024)

Every tokenizers/<name>/tokenizer.py is loaded by path too and provides get_tokenizer(size) and
available_sizes().
"""

import importlib.util
import sys
from pathlib import Path

TOKENIZERS_DIR = Path(__file__).resolve().parent


def available_tokenizers() -> list[str]:
    """The folders of tokenizers/ that hold a tokenizer.py."""
    return sorted(p.parent.name for p in TOKENIZERS_DIR.glob("*/tokenizer.py"))


def tokenizer_module(name: str):
    """tokenizers/<name>/tokenizer.py as a module, loaded by path once per process."""
    if name not in available_tokenizers():
        raise ValueError(f"tokenizer {name!r} is not available: choose one of {available_tokenizers()}")
    module_name = f"futureformer_tokenizers_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, TOKENIZERS_DIR / name / "tokenizer.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]


def get_tokenizer(name: str, size: int | str):
    """The tokenizer `name` (a folder of tokenizers/, e.g. "bpe_v2") of `size` tokens (e.g. 1024,
    or "chars" for the alphabet alone). A bad name or size raises ValueError listing the available
    ones."""
    return tokenizer_module(name).get_tokenizer(size)
