"""Shared plumbing: raw stories, the tokenized-data cache and batches, saving and loading runs.

Data flows one way: text -> tokenizer -> cached token ids -> batches -> model.
"""

import os

EOT = "<|endoftext|>"  # the separator between stories in TinyStories' raw text files
REPO_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE_PATH = os.path.join(REPO_DIR, "..", "shared", "data", "tinystories_sample.txt")


# ---------------------------------------------------------------- raw stories


def read_stories(path: str) -> list[str]:
    """The stories of a raw TinyStories text file (stories separated by <|endoftext|>), stripped."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
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
