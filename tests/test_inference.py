"""inference.py: the sampler, the sliding window, cached == uncached generation at any length, prompts,
the future plan, the command line and the notebook. Tiny models with random weights throughout."""

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import inference
import tools
from config import ModelConfig, TrainConfig
from modules.model import Model
from tools import REPO_DIR

TOK = tools.get_tokenizer("bpe_v2", 1024)
BANNED = [TOK.bos_id, TOK.pad_id]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models decode faster on one thread, and a busy 2-core machine does not stall them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed=0, **overrides):
    """A tiny eval-mode model with random weights; max_seq_len 16 so that generation soon slides."""
    kw = dict(dim=32, num_layers=3, max_seq_len=16, fs_periods=2, vocab_len=TOK.vocab_len, dropout_rate=0.0)
    torch.manual_seed(seed)
    return Model(ModelConfig(**{**kw, **overrides})).eval()


# ---------------------------------------------------------------- the sampler

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])  # token i has probability PROBS[i]
LOGITS = PROBS.log()


@pytest.mark.parametrize("kwargs, kept", [
    ({}, [0, 1, 2, 3]),
    ({"top_p": 0.45}, [0]),                   # the first token alone reaches 0.45
    ({"top_p": 0.75}, [0, 1]),                # 0.5 falls short, 0.5 + 0.3 reaches it
    ({"top_p": 0.9}, [0, 1, 2]),
    ({"top_p": 1.0}, [0, 1, 2, 3]),
    ({"top_k": 2}, [0, 1]),
    ({"top_k": 10}, [0, 1, 2, 3]),
    ({"top_p": 0.9, "top_k": 2}, [0, 1]),     # at most top_k of the top-p set
    ({"min_p": 0.2}, [0, 1, 2]),              # none below 0.2 x 0.5 = 0.1
    ({"min_p": 0.7}, [0]),
    ({"top_p": 0.9, "min_p": 0.5}, [0, 1]),
])
def test_filters_keep_the_right_set_and_renormalise(kwargs, kept):
    probs = inference.next_token_probs(LOGITS, **kwargs)
    want = torch.zeros(4)
    want[kept] = PROBS[kept] / PROBS[kept].sum()
    torch.testing.assert_close(probs, want)


def test_temperature_sharpens_and_flattens():
    cold, hot = inference.next_token_probs(LOGITS, 0.5), inference.next_token_probs(LOGITS, 2.0)
    torch.testing.assert_close(cold, torch.softmax(LOGITS / 0.5, -1))
    assert cold[0] > PROBS[0] > hot[0] and hot[3] > PROBS[3] > cold[3]


def test_greedy_is_argmax_and_top_k_1_is_greedy():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(TOK.vocab_len + 3, generator=g)
        best = int(logits[:TOK.vocab_len].argmax())
        logits[BANNED] = logits.max() + 1  # bos and pad lead, but are banned
        assert inference.sample_next(logits, temperature=0, banned_ids=BANNED) == best
        assert inference.sample_next(logits, temperature=1.3, top_k=1, generator=g, banned_ids=BANNED) == best


def test_banned_ids_are_never_drawn():
    logits = torch.zeros(TOK.vocab_len + 3)
    logits[BANNED] = 50.0
    probs = inference.next_token_probs(logits, 1.0, top_p=0.5, banned_ids=BANNED)
    assert probs[BANNED].sum() == 0 and math.isclose(float(probs.sum()), 1, rel_tol=1e-5)
    g = torch.Generator().manual_seed(0)
    draws = {inference.sample_next(logits, 1.0, generator=g, banned_ids=BANNED) for _ in range(200)}
    assert not draws & set(BANNED)


def test_the_seed_reproduces_the_draws():
    logits = torch.randn(100, generator=torch.Generator().manual_seed(1))

    def draws(seed):
        g = torch.Generator().manual_seed(seed)
        return [inference.sample_next(logits, 1.0, top_p=0.95, generator=g) for _ in range(30)]
    assert draws(0) == draws(0) != draws(1)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1}, "temperature=-1 is not allowed"),
    ({"temperature": float("nan")}, "temperature=nan is not allowed"),
    ({"temperature": "hot"}, "temperature='hot' is not allowed"),
    ({"top_k": 0}, "top_k=0 is not allowed"),
    ({"top_k": 2.5}, "top_k=2.5 is not allowed"),
    ({"top_p": 0}, "top_p=0 is not allowed"),
    ({"top_p": 1.5}, "top_p=1.5 is not allowed"),
    ({"min_p": -0.1}, "min_p=-0.1 is not allowed"),
    ({"max_gen_len": -1}, "max_gen_len=-1 is not allowed"),
])
def test_bad_arguments_raise(kwargs, message):
    model = tiny()
    with pytest.raises(ValueError, match=message):
        inference.generate("Once", model, TOK, **kwargs)


# ---------------------------------------------------------------- the window rule


@pytest.mark.parametrize("T", [1, 2, 3, 7, 16, 31, 256])
def test_window_start_properties(T):
    s = T - T // 2
    prev = 0
    for n in range(0, 4 * T + 10):
        start = inference.window_start(n, T)
        assert start % s == 0 and start >= prev and start - prev in (0, s)  # jumps by s, never back
        if n <= T:
            assert start == 0
        else:
            assert T // 2 + 1 <= n - start <= T                               # half a context or more is kept
        if start != prev:
            assert n - start == T // 2 + 1                                    # a jump keeps exactly the newest half
        prev = start


# ---------------------------------------------------------------- cached == uncached

CONFIGS = {
    "futureformer": {},
    "baseline": {"fs_periods": 0},
    "P3-layer-head": {"fs_periods": 3, "num_layers": 4, "fs_output_layer": "layer"},
    "parallel-causal-bce-C2": {"fs_periods": 3, "num_layers": 4, "fs_arrangement": "parallel",
                               "fs_memory": "causal", "fs_loss": "bce", "compress_freq": "linear",
                               "compress_freq_n": 0.5},
    "self-mlp-odd-T": {"fs_memory": "self", "fs_output_layer": "mlp", "max_seq_len": 15},
    "joint-shared-kv": {"fs_attention": "joint", "fs_shared_memory_kv": True},
    "parallel-causal-shared-kv": {"fs_attention": "parallel", "fs_memory": "causal", "fs_shared_memory_kv": True,
                                  "fs_arrangement": "parallel"},
    "joint-self-odd-T": {"fs_attention": "joint", "fs_memory": "self", "max_seq_len": 15},
    "dual-shared-kv-no-head-norm": {"fs_attention": "dual", "fs_shared_memory_kv": True, "fs_head_norm": False},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_logits_equal_uncached_past_max_seq_len(name):
    model = tiny(**CONFIGS[name])
    ids = torch.randint(0, TOK.vocab_len, (45,), generator=torch.Generator().manual_seed(0)).tolist()
    cached, full = inference.Decoder(model, True), inference.Decoder(model, False)
    with torch.no_grad():
        for n in range(1, len(ids) + 1):  # the window jumps several times on the way
            a = cached.logits(ids[:n])
            b = full.logits(ids[:n])
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=f"{name}: logits differ at n={n}")
            assert cached.cache.pos == n - inference.window_start(n, model.cfg.max_seq_len)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_text_equals_uncached(name):
    model = tiny(**CONFIGS[name])
    for prompt, kw in (("Once upon a time", {"temperature": 0}), ("The cat", {"temperature": 1.0, "top_p": 0.9})):
        texts = [inference.generate(prompt, model, TOK, max_gen_len=40, use_kv_cache=c,
                                    generator=torch.Generator().manual_seed(3), **kw) for c in (True, False)]
        assert texts[0] == texts[1]
        assert len(TOK.encode(texts[0])) > model.cfg.max_seq_len  # it went past the context


# ---------------------------------------------------------------- prompts and stopping


def test_empty_prompt_starts_from_bos():
    model = tiny()
    assert inference.encode_prompt("", TOK) == [TOK.bos_id]
    text = inference.generate("", model, TOK, max_gen_len=5, temperature=0)
    ids = inference.generate_ids([TOK.bos_id], model, TOK, max_gen_len=5, temperature=0)
    assert text == TOK.decode(ids) and len(ids) == 6


def test_overlong_prompt_slides_the_window():
    model = tiny()
    prompt = "Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog. " * 2
    assert len(TOK.encode(prompt)) > 2 * model.cfg.max_seq_len
    texts = [inference.generate(prompt, model, TOK, max_gen_len=5, temperature=0, use_kv_cache=c)
             for c in (True, False)]
    assert texts[0] == texts[1] and texts[0].startswith(prompt) and len(texts[0]) > len(prompt)


def test_unknown_characters_are_dropped_with_a_warning():
    model = tiny()
    with pytest.warns(UserWarning, match="'☃€'"):
        text = inference.generate("Snow☃man €", model, TOK, max_gen_len=3, temperature=0)
    assert text.startswith("Snowman ") and "☃" not in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inference.generate("Snowman", model, TOK, max_gen_len=1)  # no warning for known characters


def test_a_list_of_prompts_gives_a_list_of_texts():
    model = tiny()
    texts = inference.generate(["Once", "The dog"], model, TOK, max_gen_len=3, temperature=0)
    assert texts == [inference.generate(p, model, TOK, max_gen_len=3, temperature=0) for p in ("Once", "The dog")]


def test_train_mode_is_restored_and_dropout_is_off_while_generating():
    model = tiny(dropout_rate=0.5)
    want = inference.generate("Once", model, TOK, max_gen_len=10, temperature=0)
    model.train()
    assert inference.generate("Once", model, TOK, max_gen_len=10, temperature=0) == want
    assert model.training


class Scripted(nn.Module):
    """A stand-in model: after a sequence of `stop_at` tokens it writes eos, before that token 7; bos and
    pad always look best, so they must be masked."""

    def __init__(self, stop_at: int):
        super().__init__()
        self.cfg = ModelConfig(dim=8, num_layers=1, fs_periods=0, max_seq_len=16, vocab_len=TOK.vocab_len)
        self.stop_at, self.weight, self.future = stop_at, nn.Parameter(torch.zeros(1)), {}
        self.calls = 0

    def new_cache(self):
        return Model.new_cache(self)

    def forward(self, ids, cache=None):
        self.calls += 1
        n = ids.shape[1] + (cache.pos if cache is not None else 0)          # visible tokens
        if cache is not None:
            cache.pos += ids.shape[1]
        logits = torch.zeros(1, ids.shape[1], self.cfg.vocab_size)
        logits[..., BANNED] = 100.0
        logits[0, -1, TOK.eos_id if n >= self.stop_at else 7] = 50.0
        return logits, None


def test_generation_stops_at_eos_and_never_writes_bos_or_pad():
    model = Scripted(stop_at=6)
    ids = inference.generate_ids([TOK.bos_id], model, TOK, max_gen_len=100, temperature=0.8)
    assert ids == [TOK.bos_id] + [7] * 5 and model.calls == 6
    assert inference.generate("", model, TOK, max_gen_len=100) == TOK.decode([7] * 5)
    # stop_at_eos=False masks eos instead: exactly max_gen_len tokens
    assert len(inference.generate_ids([TOK.bos_id], model, TOK, 30, temperature=0, stop_at_eos=False)) == 31


# ---------------------------------------------------------------- the future plan


def test_future_plan_finds_the_token_a_vector_points_at():
    model = tiny(pre_pool_norm=True)
    with torch.no_grad():
        model(torch.tensor([TOK.encode("Once upon")]))
        target = model.loss_fn.pre_pool_norm(model.embedding.weight[42])   # a perfect prediction of token 42
        model.future[1][0, -1, 0] = 3.0 * target
    plan = inference.future_plan(model, TOK, top=4)
    assert [(p["k"], p["first"], p["last"]) for p in plan] == [(1, 2, 3), (2, 4, 7)]
    first = plan[0]["tokens"]
    assert first[0][0] == 42 and first[0][1] == TOK.expand_token(42) and math.isclose(first[0][2], 1, abs_tol=1e-5)
    assert len(first) == 4 and [s for *_, s in first] == sorted((s for *_, s in first), reverse=True)


def test_future_plan_bce_and_several_vectors_per_chunk():
    model = tiny(**CONFIGS["parallel-causal-bce-C2"])
    with torch.no_grad():
        model(torch.tensor([TOK.encode("Once upon a time")]))
    plan = inference.future_plan(model, TOK, top=3)
    assert [(p["k"], p["first"], p["last"]) for p in plan] == [(1, 2, 3), (2, 4, 7), (3, 8, 11), (3, 12, 15)]
    v = model.future[3][0, -1, 1]
    probs = torch.sigmoid(model.logits(model.final_norm(v)))
    probs[BANNED] = -1
    assert plan[3]["tokens"][0][0] == int(probs.argmax())
    assert all(0 < s < 1 and i not in BANNED for p in plan for i, _, s in p["tokens"])


def test_future_plan_rank_reads_the_predicted_order():
    model = tiny(**{**CONFIGS["parallel-causal-bce-C2"], "fs_loss": "rank"})
    with torch.no_grad():
        model(torch.tensor([TOK.encode("Once upon a time")]))
    plan = inference.future_plan(model, TOK, top=3)
    v = model.future[2][0, -1, 0]
    probs = torch.softmax(model.logits(model.final_norm(v)), -1).detach()
    probs[BANNED] = -1
    assert plan[1]["tokens"][0][0] == int(probs.argmax())
    assert plan[1]["tokens"][0][2] == pytest.approx(float(probs.max()))
    assert "share of the predicted order" in inference.format_plan([{"token": "a", "plan": plan}], model.cfg)


def test_generate_returns_the_plan_of_every_token_the_same_with_and_without_cache():
    model = tiny()
    runs = [inference.generate("Once upon", model, TOK, max_gen_len=25, temperature=0, use_kv_cache=c,
                               return_plan=True, plan_top=2) for c in (True, False)]
    (text, steps), (text2, steps2) = runs
    assert text == text2 and len(steps) == 25
    assert text == "Once upon" + "".join(s["token"] for s in steps)
    for a, b in zip(steps, steps2):
        assert [[i for i, *_ in p["tokens"]] for p in a["plan"]] == [[i for i, *_ in p["tokens"]] for p in b["plan"]]
    assert inference.generate("Once", tiny(fs_periods=0), TOK, max_gen_len=2, return_plan=True)[1][0]["plan"] == []
    assert "t+2..t+3" in inference.format_plan(steps, model.cfg)
    assert "no plan" in inference.format_plan([], tiny(fs_periods=0).cfg)


# ---------------------------------------------------------------- the command line and the notebook


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    for name, kw in (("tiny", {}), ("tiny_base", {"fs_periods": 0})):
        model = tiny(**kw)
        tools.save_model(str(root / name), model, model.cfg, TrainConfig())
    return str(root)


def _cli(*args):
    return subprocess.run([sys.executable, "inference.py", *args], cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_cli_generates_and_shows_tokens_and_the_plan(trained_dir):
    r = _cli("tiny", "Once upon a time", f"--trained_dir={trained_dir}", "--max_len=5", "--temperature=0",
             "--show_tokens", "--show_future")
    assert r.returncode == 0, r.stderr
    model, tok, _ = tools.load_model("tiny", trained_dir)
    want = inference.generate("Once upon a time", model, tok, max_gen_len=5, temperature=0)
    lines = r.stdout.splitlines()
    assert lines[0] == want
    assert "prompt tokens (5): <bos>|Once| upon| a| time" in r.stdout and "generated tokens (5)" in r.stdout
    assert "t+2..t+3:" in r.stdout and "t+4..t+7:" in r.stdout


@pytest.mark.slow
def test_cli_missing_model_is_a_clear_error(trained_dir):
    r = _cli("tiyn", f"--trained_dir={trained_dir}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no trained model 'tiyn'" in r.stderr and "Did you mean 'tiny'" in r.stderr


@pytest.mark.slow
def test_cli_without_a_run_name_says_what_to_give(trained_dir):
    r = _cli(f"--trained_dir={trained_dir}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "give a run to generate with" in r.stderr and "'tiny'" in r.stderr
    assert "prompts" not in r.stderr.splitlines()[-1]  # prompts are optional, and not called required


def test_cli_in_process(trained_dir, capsys):
    # no prompt: one story from scratch; a baseline has no future to show; --key value works too
    assert inference.main(["tiny_base", "--trained_dir", trained_dir, "--max_len", "4", "--seed=1",
                           "--show_future", "--no_cache"]) == 0
    out = capsys.readouterr().out
    assert "no plan to show" in out
    assert inference.main(["tiny", "A☃", "--trained_dir", trained_dir, "B", "--max_len=2", "--seed=0"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().split("\n\n")) == 2                       # two prompts, two texts
    assert err.startswith("warning: the prompt's characters '☃'")
    assert inference.main(["tiny", "--trained_dir", trained_dir, "--temperature=-1"]) == 2
    assert "temperature=-1.0 is not allowed" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_runs(trained_dir, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "inference.out.ipynb"
    papermill.execute_notebook(os.path.join(REPO_DIR, "inference.ipynb"), str(out), cwd=REPO_DIR,
                               parameters={"model_name": "tiny", "trained_dir": trained_dir, "max_gen_len": 5,
                                           "temperature": 0.0},
                               progress_bar=False, kernel_name="python3")
    text = out.read_text()
    assert "prompt tokens" in text and "t+2..t+3:" in text


COMPILED = {  # every fs_attention, arrangement, memory rule and head kind, shared kv, C > 1 (one compile each)
    "sequential-horizon-layer-head": CONFIGS["P3-layer-head"],
    "parallel-causal-shared-kv-C2": {**CONFIGS["parallel-causal-shared-kv"], "fs_loss": "bce",
                                     "compress_freq": "linear", "compress_freq_n": 0.5},
    "joint-self-odd-T": CONFIGS["joint-self-odd-T"],
    "dual-shared-kv-no-head-norm": CONFIGS["dual-shared-kv-no-head-norm"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMPILED))
def test_compiled_decoding_gives_the_same_tokens_past_max_seq_len(name, capsys):
    """The compiled one-token step (static cache, tensor position) writes the tokens and plans of the eager cached
    path, through several window jumps; it compiles once per model and says so. (The static cache's eager path is
    checked for every option combination in test_causality.py.)"""
    model = tiny(**COMPILED[name])
    torch._dynamo.reset()
    for prompt, kw in (("Once upon a time", {"temperature": 0}), ("The cat", {"temperature": 1.0, "top_p": 0.9})):
        out = [inference.generate(prompt, model, TOK, max_gen_len=40, generator=torch.Generator().manual_seed(3),
                                  compile=c, return_plan=True, **kw) for c in (False, True)]
        assert out[0][0] == out[1][0]
        assert len(TOK.encode(out[0][0])) > model.cfg.max_seq_len  # it went past the context
        for eager, compiled in zip(out[0][1], out[1][1], strict=True):
            assert [[t for t, _, _ in p["tokens"]] for p in eager["plan"]] == \
                   [[t for t, _, _ in p["tokens"]] for p in compiled["plan"]]
    assert capsys.readouterr().err.count("compiled the decoding step in") == 1
    assert inference.will_compile(model, None, 1)  # paid once, used from then on
    assert not inference.will_compile(tiny(**COMPILED[name]), None, 100)
