"""Training: `train(model_cfg, train_cfg)`, importable by train.ipynb, and `python train.py --key=value`.

Not written yet: it is the next piece of work (the train / generate / compare issue), built on what
exists now: the model (`modules.model.Model`, whose forward returns the loss and keeps its parts in
`model.loss_parts`) and the data pipeline (`tools.get_data`, `tools.get_batch`, `tools.eval_batches`,
`tools.bits_per_byte`). tests/test_learning.py shows the smallest training loop over them.
"""

import sys

MESSAGE = ("train.py is not written yet (it is the next issue: train, generate, compare). The model "
           "(modules/model.py) and the data pipeline (tools.get_data / get_batch) are ready; see README.md.")


def train(*args, **kwargs):
    raise NotImplementedError(MESSAGE)


if __name__ == "__main__":
    sys.exit(MESSAGE)
