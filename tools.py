"""The shared plumbing, one concern per file; this module gathers what notebooks and scripts use most, so that
`import tools` keeps working:

    data.py       raw stories -> tokenizer -> cached token ids, bits per byte
    batches.py    cached token ids -> batches (random training windows, fixed evaluation windows)
    runs.py       the run folder trained/<name>/: save, load, log, checkpoints, names, cached scores
    hardware.py   the device, the precision (bf16 where the CPU or GPU has bf16 units), the compiler's noise

Code inside the project imports from those files directly.
"""

from batches import eval_batches, get_batch  # noqa: F401
from data import (  # noqa: F401
    EOT,
    SAMPLE_PATH,
    SPLITS,
    TOKENIZERS_DIR,
    VALID_SAMPLE_PATH,
    DataSourceError,
    TokenData,
    bits_per_byte,
    describe_data,
    get_data,
    get_tokenizer,
    load_module,
    read_stories,
    split_stories,
)
from hardware import autocast, machine_name, pick_device, pick_precision  # noqa: F401
from runs import (  # noqa: F401
    REPO_DIR,
    RUN_FILES,
    SAVED_FILES,
    TRAINED_DIR,
    list_runs,
    load_configs,
    load_model,
    read_log,
    run_path,
    save_model,
)
