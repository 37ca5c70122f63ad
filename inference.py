"""Generation from the shell: write text with a trained model and show what it planned (generation.py does the
work; `import inference` gives the same functions, for notebooks):

    python inference.py NAME "Once upon a time" --temperature=0.7 --top_p=0.9 --show_future
    python inference.py --help
"""

import argparse
import sys
import warnings

import torch

from generation import (  # noqa: F401  (inference.ipynb and older code: inference.generate, ...)
    AUTO_COMPILE_TOKENS,
    CompiledStep,
    Decoder,
    check_sampling,
    compare_samples,
    compiled_step,
    encode_prompt,
    format_plan,
    format_tokens,
    future_plan,
    generate,
    generate_ids,
    next_token_probs,
    plan_recorder,
    sample_next,
    show_predictions,
    will_compile,
    window_start,
)
from runs import list_runs, load_model, runs_folder

# ---------------------------------------------------------------- command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Generate text with a trained model from trained/.",
                                epilog='example: python inference.py my_run "Once upon a time" --temperature=0.7')
    p.add_argument("name", nargs="?", help="a run folder in trained/ (or the path to a run folder)")
    p.add_argument("prompts", nargs="*", help="prompts, each generated from in turn (none: one story from scratch)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy, 1 = the model's own odds")
    p.add_argument("--max_len", type=int, default=100, help="tokens to generate at most")
    p.add_argument("--top_k", type=int, default=None, help="keep at most the k most likely tokens")
    p.add_argument("--top_p", type=float, default=None, help="keep the smallest set reaching this mass")
    p.add_argument("--min_p", type=float, default=None, help="drop tokens below min_p x the top probability")
    p.add_argument("--seed", type=int, default=None, help="seed the sampler (default: fresh randomness)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--show_tokens", action="store_true", help="print the tokens and their ids")
    p.add_argument("--show_future", action="store_true", help="print the model's plan at each step")
    p.add_argument("--top", type=int, default=3, help="tokens shown per predicted chunk vector")
    p.add_argument("--no_cache", action="store_true", help="full forward pass per token (same result, slower)")
    p.add_argument("--compile", choices=("auto", "true", "false"), default="auto",
                   help=f"compile the decoding step (same result; pays from ~{AUTO_COMPILE_TOKENS:,} tokens on a CPU)")
    p.add_argument("--trained_dir", default=None, help="where the runs are (default: trained/)")
    args = p.parse_intermixed_args(argv)
    if args.name is None:  # argparse would call the optional prompts required too
        p.error(f"give a run to generate with: python inference.py NAME [PROMPT ...]; runs in "
                f"{runs_folder(args.trained_dir)}: {list_runs(args.trained_dir) or 'none yet'}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_sampling(args.temperature, args.top_k, args.top_p, args.min_p, args.max_len)
        if args.top < 1:
            raise ValueError(f"top={args.top} is not allowed: must be an int >= 1")
        model, tokenizer, cfg = load_model(args.name, args.trained_dir, args.device)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    for i, prompt in enumerate(args.prompts or [""]):
        if i:
            print()
        with warnings.catch_warnings():  # a one-line warning, without the source line
            warnings.showwarning = lambda message, *_: print(f"warning: {message}", file=sys.stderr)
            ids = encode_prompt(prompt, tokenizer)
        on_step, steps = plan_recorder(tokenizer, args.top) if args.show_future else (None, None)
        out = generate_ids(ids, model, tokenizer, args.max_len, args.temperature, args.top_k, args.top_p,
                           args.min_p, not args.no_cache, generator, on_step=on_step,
                           compile={"auto": None, "true": True, "false": False}[args.compile])
        print(tokenizer.decode(out))
        if args.show_tokens:
            print(format_tokens(out, tokenizer, len(ids)))
        if args.show_future:
            print(format_plan(steps, cfg))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback (nothing is half-written: files are replaced whole)
        print("\ninference.py: interrupted", file=sys.stderr)
        sys.exit(130)
