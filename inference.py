"""Generation: `generate(prompt, model, tokenizer, ...)` and `python inference.py NAME "prompt"`.

Not written yet: it is the next piece of work (the train / generate / compare issue). What it will
build on exists now: `Model.new_cache()` and `model(ids, cache=cache)` decode incrementally with a KV
cache for every self-attention and the cached future memory, giving the logits of a full forward pass
(tests/test_causality.py checks it for every option).
"""

import sys

MESSAGE = ("inference.py is not written yet (it is the next issue: train, generate, compare). Incremental "
           "decoding is ready in the model: cache = model.new_cache(); model(ids, cache=cache).")


def generate(*args, **kwargs):
    raise NotImplementedError(MESSAGE)


if __name__ == "__main__":
    sys.exit(MESSAGE)
