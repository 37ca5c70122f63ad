"""Generation: write text with a trained model, and look at what it planned for the future. inference.py is its
command line:

    python inference.py NAME "Once upon a time" --temperature=0.7 --top_p=0.9 --show_future

    model, tokenizer, cfg = load_model(NAME)             # runs.py (also tools.load_model)
    generate("Once upon a time", model, tokenizer, temperature=0.7, top_p=0.9)     # -> the text

Data flow step: a trained model and a prompt -> text (the end of text -> tokens -> model -> ...).

One step. The visible tokens go through the model; the logits of the last position become a
distribution over the next token (`sample_next`: divide by the temperature, softmax, cut the unlikely
tail with top-p, top-k and min-p, renormalise); one token is drawn and appended. Repeat until the
model writes end-of-story or max_gen_len tokens are out. bos and pad are never drawn.

The KV cache. A full forward pass per step recomputes the keys and values of every earlier token,
O(T^2) work per token. `model.new_cache()` keeps them in every self-attention layer (the future-sight
layers also keep their projected future memory), so a step feeds only the new token.

The sliding window. The model sees at most T = max_seq_len tokens. Past that, the first visible token
jumps ahead s = T - T // 2 tokens at a time (`window_start`): the newest half of a context stays
visible, the cache is refilled from it in one forward pass, and the next steps append to it again.
Sliding by one token instead would shift every rotary position and force a refill at every step. The
uncached path follows the very same rule, so both give the same logits at any length (the tests check
it past max_seq_len).

The future plan. A FutureFormer predicts, at every position t, vectors summarising the chunks of
tokens t+2..t+3, t+4..t+7, ... (`model.future`, {k: (B, T, C, D)}). `future_plan` reads them back as
tokens: those whose normed embeddings are nearest (cosine) to each predicted vector, since the loss
trains the vector towards pool(norm(embeddings of the chunk's tokens)); with fs_loss='bce' the vector
maps to vocabulary logits through the final norm and output, as in the loss, and the top tokens are
those most likely to be in the chunk; with fs_loss='rank' the same logits under a softmax, and the top
tokens are those expected first.

Legend: n tokens in the sequence so far, t tokens fed in one call, V vocab_size, C vectors per chunk,
D model dim.
"""

import itertools
import math
import sys
import time
import warnings
import weakref

import pandas as pd
import torch
import torch.nn.functional as F

from batches import eval_batches
from config import VOCAB_FS_LOSSES
from data import get_data
from hardware import quiet_compile
from runs import load_configs, load_model, resolve_names

# ---------------------------------------------------------------- sampling


def check_sampling(temperature=1.0, top_k=None, top_p=None, min_p=None, max_gen_len=0):
    """Raise ValueError naming the first bad sampling argument."""
    def bad(name, value, allowed):
        return ValueError(f"{name}={value!r} is not allowed: {allowed}")

    def number(x):
        return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)

    if not number(temperature) or temperature < 0:
        raise bad("temperature", temperature, "must be a finite number >= 0 (0 = greedy, 1 = the model's own odds)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise bad("top_k", top_k, "must be an int >= 1, or None for no limit")
    if top_p is not None and (not number(top_p) or not 0 < top_p <= 1):
        raise bad("top_p", top_p, "must be a number in (0, 1], or None for no limit")
    if min_p is not None and (not number(min_p) or not 0 <= min_p <= 1):
        raise bad("min_p", min_p, "must be a number in [0, 1], or None for no limit")
    if isinstance(max_gen_len, bool) or not isinstance(max_gen_len, int) or max_gen_len < 0:
        raise bad("max_gen_len", max_gen_len, "must be an int >= 0")


def next_token_probs(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, banned_ids=()):
    """The distribution (V,) the next token is drawn from, given the last position's logits (V,).

    As docs/design.md §5 says: logits / temperature -> softmax -> keep the smallest set of most likely tokens
    whose mass reaches top_p (at least one), at most top_k of them, and none below min_p x the top
    probability -> renormalise. temperature 0 (greedy) puts all the mass on the argmax. `banned_ids`
    (bos and pad, during generation) get probability 0."""
    check_sampling(temperature, top_k, top_p, min_p)
    logits = logits.detach().float()
    if len(banned_ids):
        logits = logits.clone()
        logits[list(banned_ids)] = float("-inf")
    if temperature == 0:
        return F.one_hot(logits.argmax(), logits.shape[-1]).float()
    probs = F.softmax(logits / temperature, dim=-1)                           # (V,)
    if top_k is None and (top_p is None or top_p == 1) and not min_p:
        return probs
    p, order = probs.sort(descending=True)                                    # (V,) most likely first
    keep = torch.ones_like(p, dtype=torch.bool)
    if top_p is not None and top_p < 1:
        keep &= p.cumsum(-1) - p < top_p       # the mass before a token falls short of top_p: the first stays
    if top_k is not None:
        keep[top_k:] = False
    if min_p:
        keep &= p >= min_p * p[0]
    probs = torch.zeros_like(probs).scatter_(-1, order, p * keep)
    return probs / probs.sum()


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, generator=None, banned_ids=()) -> int:
    """The next token id, drawn from `next_token_probs(logits, ...)` with torch.multinomial and the
    optional torch.Generator (the same seed draws the same tokens); temperature 0 takes the argmax."""
    probs = next_token_probs(logits, temperature, top_k, top_p, min_p, banned_ids)    # (V,)
    if temperature == 0:
        return int(probs.argmax())
    if generator is not None:
        probs = probs.to(generator.device)
    return int(torch.multinomial(probs, 1, generator=generator))


# ---------------------------------------------------------------- the window and the cache


def window_start(n: int, max_seq_len: int) -> int:
    """Index of the first visible token when the sequence holds n tokens (the visible ones: ids[start:]).

    0 while everything fits; past that it jumps in steps of s = T - T // 2, so the window always holds
    between T // 2 + 1 and T tokens, and a jump happens once every s tokens. The one rule both the
    cached and the uncached path follow."""
    T = max_seq_len
    s = T - T // 2
    return 0 if n <= T else -(-(n - T) // s) * s   # ceil((n - T) / s) * s


class CompiledStep:
    """A model's one-token decoding step compiled with torch.compile, and the static cache it reads and writes
    (preallocated for max_seq_len positions, the position a tensor: the step's shapes never change, so it compiles
    once). Made once per model by `compiled_step`; the compile time is paid at the first step."""

    def __init__(self, model):
        self.cache = model.new_cache(static=True)
        with quiet_compile():  # torch.compile's first call imports inductor, which warns about torch's own code
            self.fn = torch.compile(_one_token, dynamic=False)
        self.compiled = False

    def __call__(self, model, token: int):
        """The logits (V,) after one more token, which the cache's positions continue."""
        x = torch.tensor([[token]], device=self.cache.pos.device)
        if self.compiled:
            with quiet_compile():  # a later call may compile again (a guard fails): the same filter (a few µs)
                return self.fn(model, x, self.cache)[0, -1]
        t0 = time.perf_counter()
        print("compiling the decoding step with torch.compile, once for this model (measured 20 s on 2 CPU cores "
              "for the default FutureFormer)", file=sys.stderr, flush=True)
        with quiet_compile():
            logits = self.fn(model, x, self.cache)[0, -1]
        self.compiled = True
        print(f"compiled the decoding step in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        return logits


def _one_token(model, x, cache):
    return model(x, cache=cache)[0]


_STEPS = weakref.WeakKeyDictionary()  # model -> its CompiledStep
AUTO_COMPILE_TOKENS = 20_000  # compile=None compiles from this many tokens in one call on: measured on a 2-core
# CPU (benchmarks/generate_speed.py), 20 s of compiling the default FutureFormer against 1.75 ms saved per token
# (11,000 tokens to break even), the baseline 0.8 ms a token; a margin for slower compiles


def compiled_step(model) -> CompiledStep:
    """The model's CompiledStep, made at the first call (per model object)."""
    step = _STEPS.get(model)
    if step is None or step.cache.pos.device != next(model.parameters()).device:
        step = _STEPS[model] = CompiledStep(model)
    return step


def will_compile(model, compile: bool | None, tokens: int) -> bool:
    """Whether generation compiles its decoding step: `compile` if given; None (auto) where it pays, when the model
    already has a compiled step or `tokens` (the most this call generates) reach AUTO_COMPILE_TOKENS."""
    if compile is not None:
        return bool(compile)
    step = _STEPS.get(model)
    return (step is not None and step.compiled) or tokens >= AUTO_COMPILE_TOKENS


class Decoder:
    """Feeds a growing token sequence to the model, step by step, through the sliding window.

    `decoder.logits(ids)` -> the next-token logits (V,) after the list `ids`, which must only grow
    between calls. With the cache, only the visible tokens it does not hold yet are fed (one token per
    step); when the window jumps, a fresh cache is prefilled with the tokens kept. Without it, the
    whole visible window is fed every time. `compile`: one-token steps go through the model's CompiledStep
    (its static cache; prefills and jumps run eagerly into the same buffers), with the same tokens.
    """

    def __init__(self, model, use_kv_cache: bool = True, compile: bool = False):
        self.model, self.use_kv_cache = model, use_kv_cache
        self.device = next(model.parameters()).device
        self.cache, self.start, self.held = None, 0, 0
        self.step = compiled_step(model) if compile and use_kv_cache else None

    def logits(self, ids: list[int]):
        start = window_start(len(ids), self.model.cfg.max_seq_len)
        if not self.use_kv_cache:
            logits, _ = self.model(torch.tensor([ids[start:]], device=self.device))       # (1, n - start, V)
            return logits[0, -1]
        if self.cache is None or start != self.start:
            if self.step is not None:
                self.cache = self.step.cache
                self.cache.reset()
            else:
                self.cache = self.model.new_cache()
            self.start, self.held = start, 0
        new = ids[start + self.held:]                       # the visible tokens the cache does not hold yet
        if not new:
            raise ValueError("Decoder.logits: ids must grow between calls (the cache already holds them all)")
        fresh, self.held = self.held == 0, self.held + len(new)
        if self.step is not None and len(new) == 1 and not fresh:  # a prefill (the buffers' first write) goes eagerly
            return self.step(self.model, new[0])
        logits, _ = self.model(torch.tensor([new], device=self.device), cache=self.cache)  # (1, t, V)
        return logits[0, -1]


# ---------------------------------------------------------------- generation


def encode_prompt(prompt: str, tokenizer) -> list[int]:
    """bos + the prompt's token ids ([bos] for an empty prompt). Characters outside the tokenizer's
    alphabet are dropped by it; this warns, naming them."""
    ids = tokenizer.encode(prompt or "", bos=True, eos=False)
    kept = set(tokenizer.decode(ids))
    dropped = "".join(dict.fromkeys(c for c in prompt or "" if c not in kept))   # in order of appearance
    if dropped:
        warnings.warn(f"the prompt's characters {dropped!r} are not in the tokenizer's "
                      "alphabet and were dropped", stacklevel=2)
    return ids


@torch.inference_mode()  # no_grad, and cheaper still: ~15% of a cached step on a CPU (measured)
def generate_ids(ids: list[int], model, tokenizer, max_gen_len=100, temperature=1.0, top_k=None, top_p=None,
                 min_p=None, use_kv_cache=True, generator=None, stop_at_eos=True, on_step=None,
                 compile=None) -> list[int]:
    """`ids` (a prompt's ids, bos first) followed by up to max_gen_len sampled ids.

    Generation stops at eos (not included). With stop_at_eos=False eos is never drawn instead, so
    exactly max_gen_len tokens come out (benchmarks). `on_step(token_id, model)` is called after each
    token is drawn, while `model.future` still holds the predictions made with its logits. Runs in eval
    mode under torch.inference_mode (no gradients); the model's train/eval mode is restored afterwards.
    `compile`: True sends one-token steps through the model's compiled decoding step (CompiledStep, the same
    tokens, compiled once per model); None (auto) does so where it pays (will_compile); False never."""
    check_sampling(temperature, top_k, top_p, min_p, max_gen_len)
    if len(ids) == 0:
        raise ValueError("ids must hold at least one token: an empty prompt is [tokenizer.bos_id]")
    banned = [tokenizer.bos_id, tokenizer.pad_id] + ([] if stop_at_eos else [tokenizer.eos_id])
    ids, was_training = list(ids), model.training
    model.eval()
    try:
        decoder = Decoder(model, use_kv_cache, will_compile(model, compile, max_gen_len))
        for _ in range(max_gen_len):
            token = sample_next(decoder.logits(ids), temperature, top_k, top_p, min_p, generator, banned)
            if token == tokenizer.eos_id:
                break
            if on_step is not None:
                on_step(token, model)
            ids.append(token)
    finally:
        model.train(was_training)
    return ids


def plan_recorder(tokenizer, top: int = 3):
    """(on_step, steps): an on_step callback for generate_ids that appends one dict per generated token
    to the list `steps`: {"id", "token" (its string), "plan" (future_plan at that step)}."""
    steps = []

    def on_step(token, model):
        steps.append({"id": token, "token": tokenizer.expand_token(token),
                      "plan": future_plan(model, tokenizer, top)})
    return on_step, steps


def generate(prompt, model, tokenizer, max_gen_len=100, temperature=1.0, top_k=None, top_p=None, min_p=None,
             use_kv_cache=True, generator=None, stop_at_eos=True, return_plan=False, plan_top=3, compile=None):
    """The prompt followed by the model's continuation, decoded: a str (a list of prompts -> a list of
    texts, generated one after another).

    Sampling as in `sample_next` (temperature 0 = greedy); stops at end-of-story or after max_gen_len
    tokens. `generator`: a torch.Generator, for reproducible sampling. The text is decoded from the
    ids the model saw, so characters the tokenizer dropped from the prompt are missing from it too.
    `return_plan=True` returns (text, steps) instead: steps[i] is the i-th generated token's
    {"id", "token", "plan"}, the plan listing the `plan_top` nearest tokens of each predicted chunk
    vector (see `future_plan`; [] for a baseline)."""
    if isinstance(prompt, (list, tuple)):
        compile = will_compile(model, compile, max_gen_len * len(prompt))
        return [generate(p, model, tokenizer, max_gen_len, temperature, top_k, top_p, min_p, use_kv_cache,
                         generator, stop_at_eos, return_plan, plan_top, compile) for p in prompt]
    on_step, steps = plan_recorder(tokenizer, plan_top) if return_plan else (None, None)
    ids = generate_ids(encode_prompt(prompt, tokenizer), model, tokenizer, max_gen_len, temperature, top_k, top_p,
                       min_p, use_kv_cache, generator, stop_at_eos, on_step, compile)
    text = tokenizer.decode(ids)
    return (text, steps) if return_plan else text


# ---------------------------------------------------------------- the future plan


@torch.no_grad()
def future_plan(model, tokenizer, top: int = 3, position: int = -1, row: int = 0) -> list[dict]:
    """What the model expects further ahead, read from its last forward pass (`model.future`) at
    `position` of batch row `row`: one dict per predicted vector, nearest chunk first,
    {"k": chunk, "first", "last": the offsets its (sub-)window covers, "tokens": [(id, string, score)]}
    with the `top` tokens nearest to the vector. Score: cosine similarity to the token's normed
    embedding, with fs_loss='bce' the predicted probability that the token is in the chunk, and with 'rank' its
    share of the predicted order (a softmax over the vocabulary: the sooner a token is expected, the higher).
    bos and pad are left out. [] for a baseline (fs_periods=0): it predicts no future."""
    cfg = model.cfg
    if not model.future:
        return []
    if cfg.fs_loss in VOCAB_FS_LOSSES:
        def read(v):                                   # the loss's own readout: final norm -> output -> logits
            logits = model.logits(model.final_norm(v)).float()                          # (C, V)
            return logits.sigmoid() if cfg.fs_loss == "bce" else logits.softmax(-1)
    else:                                              # the targets are pools of normed embeddings
        E = model.embedding.weight
        if model.loss_fn.pre_pool_norm is not None:
            E = model.loss_fn.pre_pool_norm(E)
        E = F.normalize(E.float(), dim=-1)                                              # (V, D)

        def read(v):
            return F.normalize(v.float(), dim=-1) @ E.T                                 # (C, V) cosines
    out = []
    for k in sorted(model.future):
        v = model.future[k][row, position]                                              # (C, D)
        scores = read(v)                                                                # (C, V)
        scores[:, [tokenizer.bos_id, tokenizer.pad_id]] = float("-inf")
        values, ids = scores.topk(min(top, scores.shape[-1] - 2), dim=-1)               # (C, top)
        first, last = cfg.chunk_offsets[k - 1]
        W = (last - first + 1) // v.shape[0]                                            # tokens per vector
        for j in range(v.shape[0]):
            out.append({"k": k, "first": first + j * W, "last": first + (j + 1) * W - 1,
                        "tokens": [(int(i), tokenizer.expand_token(i), float(s))
                                   for i, s in zip(ids[j].tolist(), values[j].tolist())]})
    return out


# ---------------------------------------------------------------- printing


def format_tokens(ids: list[int], tokenizer, n_prompt: int | None = None) -> str:
    """The tokens of `ids` separated by '|' (newlines as \\n), the prompt's first n_prompt of them
    apart from the generated ones, and the ids."""
    def show(part):
        return "|".join(tokenizer.expand_token(i).replace("\n", "\\n") for i in part)
    if n_prompt is None:
        lines = [f"tokens ({len(ids)}): {show(ids)}"]
    else:
        lines = [f"prompt tokens ({n_prompt}): {show(ids[:n_prompt])}",
                 f"generated tokens ({len(ids) - n_prompt}): {show(ids[n_prompt:])}"]
    return "\n".join(lines + [f"ids: {list(ids)}"])


def format_plan(steps: list[dict], cfg) -> str:
    """One line per generated token: the token, then for each predicted chunk vector its nearest tokens."""
    if not cfg.fs_periods:
        return "a baseline model (fs_periods=0) predicts no future: there is no plan to show"
    how = {"bce": "probability of being in the chunk", "rank": "share of the predicted order, the sooner the higher"
           }.get(cfg.fs_loss, "cosine to the token's embedding")
    lines = [f"future plan: t = the last token the model saw, t+1 = the token it wrote; the nearest tokens to "
             f"each predicted chunk vector ({how})"]
    for i, step in enumerate(steps, 1):
        chunks = " | ".join(f"t+{p['first']}..t+{p['last']}: " + ", ".join(f"{s!r} {score:.2f}"
                                                                         for _, s, score in p["tokens"])
                            for p in step["plan"])
        lines.append(f"{i:4d} {step['token']!r:14} {chunks}")
    return "\n".join(lines)


# ---------------------------------------------------------------- several runs side by side


def compare_samples(names=None, prompt: str = "Once upon a time", max_gen_len: int = 60, temperature: float = 0.0,
                    seed: int = 0, trained_dir: str | None = None, device: str = "auto", **sampling) -> dict:
    """{run: the prompt and its continuation} for each run, from the same prompt: greedy by default
    (temperature=0, the same text every time); with a temperature, each run samples from a generator
    seeded with `seed`. `sampling`: top_k, top_p, min_p, as in inference.generate."""
    from inference import generate

    out = {}
    for name in resolve_names(names, trained_dir):
        model, tok, _ = load_model(name, trained_dir, device)
        gen = torch.Generator().manual_seed(seed)
        out[name] = generate(prompt, model, tok, max_gen_len=max_gen_len, temperature=temperature, generator=gen,
                             **sampling)
    return out


@torch.no_grad()
def show_predictions(model, tokenizer=None, text: str | None = None, topk: int = 5, trained_dir: str | None = None,
                     data=None, index: int = 0, max_positions: int | None = None, device: str = "auto",
                     file=None) -> pd.DataFrame:
    """Print, for each position of a text, the true next token next to the model's top-k guesses.

    model: a run name (its tokenizer and data come with it) or a Model (then pass `tokenizer`, and `data`
    when no text is given). text: encoded with bos and cut to max_seq_len + 1 tokens; None = validation
    window `index` (the windows of `evaluate`, max_seq_len long). max_positions: print only the first ones.
    A '*' marks the true token among the guesses; rank is its place in the top k ('-' = not there).
    Returns one row per position: pos, input, target, rank (0 = not in the top k), p_target, predictions
    ([(piece, probability)] best first).
    """
    label = model if isinstance(model, str) else f"{type(model).__name__}(fs_periods={model.cfg.fs_periods})"
    if isinstance(model, str):
        name, (model, tokenizer, mcfg) = model, load_model(model, trained_dir, device)
        if text is None and data is None:
            data = get_data(mcfg, load_configs(name, trained_dir)[1])
    elif tokenizer is None:
        raise ValueError("a model given as an object needs its tokenizer (load_model returns both)")
    T = model.cfg.max_seq_len
    if text is not None:
        ids = torch.tensor(tokenizer.encode(text, bos=True, eos=False)[:T + 1])
        source = repr(text if len(text) <= 60 else text[:57] + "...")
    elif data is None:
        raise ValueError("no text and no data: pass text=... or data=get_data(model_cfg, train_cfg)")
    else:
        window = next(itertools.islice(eval_batches(data, "val", 1, T), index, None), None)
        if window is None:
            raise ValueError(f"index={index} is not allowed: the validation split has "
                             f"{len(range(0, len(data.val) - 1, T))} windows of {T} tokens")
        x, y = window
        ids = torch.cat([x[0, :1], y[0]])
        ids = ids[:int((ids != data.pad_id).sum())]  # the last window of the split is padded
        source = f"validation window {index}"
    if len(ids) < 2:
        raise ValueError(f"{source} has {len(ids)} token(s) with bos: need at least 2 to predict a next token")
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(ids[None, :-1].to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    logp = logits[0].float().log_softmax(-1).cpu()                                 # (T, V)
    top_p, top_i = logp.exp().topk(topk, dim=-1)                                   # (T, k)
    targets = ids[1:]
    rows = []
    for t, target in enumerate(targets.tolist()):
        guesses = top_i[t].tolist()
        rows.append({"pos": t, "input": tokenizer.expand_token(int(ids[t])), "target": tokenizer.expand_token(target),
                     "rank": guesses.index(target) + 1 if target in guesses else 0,
                     "p_target": float(logp[t, target].exp()),
                     "predictions": [(tokenizer.expand_token(i), p) for i, p in zip(guesses, top_p[t].tolist())]})
    table = pd.DataFrame(rows)
    shown = rows if max_positions is None else rows[:max_positions]
    w_in = max([len(repr(r["input"])) for r in shown] + [5])
    w_tg = max([len(repr(r["target"])) for r in shown] + [9])
    print(f"{label} on {source}: the true next token and the top-{topk} guesses (* = the true one)", file=file)
    print(f"{'pos':>4}  {'input':<{w_in}}  {'true next':<{w_tg}}  rank  p(true)  top-{topk}", file=file)
    for r in shown:
        guesses = "  ".join(f"{'*' if i + 1 == r['rank'] else ' '}{piece!r} {p:.2f}"
                            for i, (piece, p) in enumerate(r["predictions"]))
        print(f"{r['pos']:>4}  {r['input']!r:<{w_in}}  {r['target']!r:<{w_tg}}  {r['rank'] or '-':>4}  "
              f"{r['p_target']:7.3f}  {guesses}", file=file)
    if len(shown) < len(rows):
        print(f"  ... {len(rows) - len(shown)} more positions", file=file)
    n, loss = len(rows), -float(logp[torch.arange(len(targets)), targets].mean())
    print(f"top-1 {int((table['rank'] == 1).sum())}/{n}, top-{topk} {int((table['rank'] > 0).sum())}/{n}, "
          f"NTP loss {loss:.3f} nats/token over these {n} positions", file=file)
    return table
