"""Comparing trained runs: loss curves from trained/*/log_data.csv and teacher-forced accuracy.

Not written yet: it is the next piece of work (the train / generate / compare issue); there is nothing
in trained/ to compare until training exists. Models are to be compared on next-token loss and bits
per byte (`tools.bits_per_byte`), never on a total that includes the future-sight losses.
"""

import sys

MESSAGE = ("model_comparison.py is not written yet (it is the next issue: train, generate, compare); "
           "trained/ holds no runs yet.")


if __name__ == "__main__":
    sys.exit(MESSAGE)
