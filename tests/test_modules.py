"""Shapes, gradients and reference values for every module in modules/."""

import math

import pytest
import torch
import torch.nn.functional as F

import config
from config import ModelConfig
from modules.layer import Layer
from modules.logging import LoggingModule, log_io
from modules.loss import (
    Loss,
    chunk_loss,
    chunk_valid,
    chunk_windows,
    fs_weights,
    order_target,
    rank_loss,
    target_cosine,
)
from modules.mlp import MLP, hidden_width
from modules.model import Model
from modules.mqa import (
    Cache,
    CrossAttention,
    DualAttention,
    FutureScale,
    JointAttention,
    SelfAttention,
    project_memory,
    rope,
)
from modules.norm import Norm, rms_norm
from modules.pool_ops import Pooler, compression

B, T, D = 2, 12, 16


def tiny(**kw):
    base = dict(dim=D, num_layers=4, num_q_heads=4, num_kv_heads=2, max_seq_len=32, vocab_len=29,
                mlp_hidden_mult=2, dropout_rate=0.0)
    return ModelConfig(**{**base, **kw})


def assert_grads(module, out):
    out.float().pow(2).mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"no finite gradient for {name}"


# ------------------------------------------------------------------ logging


def test_logging_prints_shapes_only_when_enabled(capsys):
    class Double(LoggingModule):
        @log_io
        def forward(self, x, scale=2):
            return x * scale

    m = Double()
    m(torch.zeros(3, 5))
    assert capsys.readouterr().out == ""
    m.enable_logging()(torch.zeros(3, 5))
    out = capsys.readouterr().out
    assert "Double.forward" in out and "in  x: Tensor(3, 5) float32" in out and "out Tensor(3, 5)" in out
    m.disable_logging()(torch.zeros(3, 5))
    assert capsys.readouterr().out == ""


def test_model_logging_traces_nested_modules(capsys):
    model = Model(tiny()).enable_logging()
    model(torch.randint(0, 32, (1, 5)))
    out = capsys.readouterr().out
    for name in ("Model.forward", "Layer.forward", "SelfAttention.forward", "CrossAttention.forward",
                 "FutureHead.forward", "MLP.forward", "Norm.forward"):
        assert name in out
    assert "    >> Layer.forward" in out  # nested calls are indented


# ------------------------------------------------------------------ norm and MLP


@pytest.mark.parametrize("norm_type", config.NORM_TYPES)
@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, False)])
def test_norm(norm_type, affine, bias):
    norm = Norm(D, norm_type, affine, bias)
    x = torch.randn(B, T, D, requires_grad=True) * 3 + 1
    y = norm(x)
    assert y.shape == x.shape
    if norm_type == "RMSNorm":
        torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(B, T), atol=1e-3, rtol=0)
    elif norm_type == "LayerNorm":
        torch.testing.assert_close(y, F.layer_norm(x, (D,), eps=1e-6), atol=1e-4, rtol=0)
    else:
        torch.testing.assert_close(y.norm(dim=-1), torch.ones(B, T), atol=1e-4, rtol=0)
    assert len(list(norm.parameters())) == affine + bias
    if affine:
        assert_grads(norm, y)


@pytest.mark.parametrize("affine", [True, False])
def test_fused_rms_norm_is_the_written_out_one_bit_for_bit(affine):
    """Norm takes F.rms_norm's fused op for fp32 RMSNorm: the same values and gradients as rms_norm, exactly."""
    norm = Norm(D, "RMSNorm", affine)
    if affine:
        with torch.no_grad():
            norm.weight.normal_()
    x = torch.randn(B, T, D, requires_grad=True) * 3 + 1
    y = norm(x)
    written = rms_norm(x.float(), norm.eps) * (norm.weight if affine else 1)
    assert torch.equal(y, written)
    g = torch.randn_like(y)
    assert torch.equal(*(torch.autograd.grad(t, x, g, retain_graph=True)[0] for t in (y, written)))


def test_norm_rejects_unknown_type():
    with pytest.raises(ValueError, match="RMSNorm"):
        Norm(D, "BatchNorm")


@pytest.mark.parametrize("nonlinearity", config.NONLINEARITIES)
@pytest.mark.parametrize("gated", [True, False])
def test_mlp(nonlinearity, gated):
    mlp = MLP(D, 4, nonlinearity, gated, bias=True)
    y = mlp(torch.randn(B, T, D))
    assert y.shape == (B, T, D)
    assert_grads(mlp, y)
    weights = sum(p.numel() for n, p in mlp.named_parameters() if n.endswith("weight"))
    assert abs(weights - 2 * D * 4 * D) <= 3 * D, "a gate must keep the parameter count of the plain MLP"


def test_mlp_out_dim_and_hidden_width():
    assert hidden_width(96, 4, gated=False) == 384 and hidden_width(96, 4, gated=True) == 256
    assert MLP(D, 2, "ReLU", False, out_dim=3 * D)(torch.randn(B, D)).shape == (B, 3 * D)
    with pytest.raises(ValueError, match="SiLU"):
        MLP(D, 2, "Tanh", False)


# ------------------------------------------------------------------ attention


def test_rope_is_a_rotation_and_relative():
    x = torch.randn(B, 3, T, 8)
    pos = torch.arange(T)
    y = rope(x, pos, 10_000.0)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))          # rotations keep length
    torch.testing.assert_close(rope(x, torch.zeros(T), 1e4), x)          # position 0 = identity
    q, k = torch.randn(8), torch.randn(8)                                # dot products depend on distance only
    d1 = rope(q, torch.tensor(5), 1e4) @ rope(k, torch.tensor(2), 1e4)
    d2 = rope(q, torch.tensor(105), 1e4) @ rope(k, torch.tensor(102), 1e4)
    torch.testing.assert_close(d1, d2, atol=1e-4, rtol=0)


@pytest.mark.parametrize("heads", [(4, 1), (4, 2), (4, 4)])
def test_self_attention_shapes_grads_and_cache(heads):
    torch.manual_seed(0)
    attn = SelfAttention(D, heads[0], heads[1], 4, 1e4).eval()
    x = torch.randn(B, T, D)
    full = attn(x)
    assert full.shape == (B, T, D)
    cache = Cache()                                                      # prefill 5, then a chunk of 4, then 1 by 1
    parts = [attn(x[:, :5], 0, cache), attn(x[:, 5:9], 5, cache)]
    parts += [attn(x[:, t:t + 1], t, cache) for t in range(9, T)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)
    # causal: the output at t ignores x after t
    x2 = x.clone()
    x2[:, 7:] = torch.randn(B, T - 7, D)
    torch.testing.assert_close(attn(x2)[:, :7], full[:, :7], atol=1e-6, rtol=0)
    assert_grads(attn.train(), attn(x))


def dense_memory(attn, memory, T, Wkv=None):
    """A slow reference's memory: keys and values of all T * N predictions (B, T*N, Hkv, hd) and which of them
    each query may see (T, T*N), written out."""
    B, t = memory[0].vectors.shape[0], torch.arange(T)
    ks, vs, masks = [], [], []
    for m in memory:
        C = m.vectors.shape[2]
        k, v = (Wkv or attn.Wkv)(m.vectors).view(B, T, C, 2, attn.Hkv, attn.hd).unbind(3)  # (B, T, C, Hkv, hd)
        if attn.use_rope:  # keys at the time the prediction is about: s + a_k + the sub-window's start
            pos = t[:, None] + m.first + (m.last - m.first + 1) // C * torch.arange(C)
            k = rope(k, pos.unsqueeze(-1), attn.theta)
        s = t.repeat_interleave(C)
        allowed = {"causal": s[None] <= t[:, None], "self": s[None] == t[:, None],
                   "horizon": (s[None] <= t[:, None]) & (s[None] + m.last >= t[:, None] + 1)}[attn.memory_mode]
        ks.append(k.flatten(1, 2))
        vs.append(v.flatten(1, 2))
        masks.append(allowed)
    return torch.cat(ks, 1), torch.cat(vs, 1), torch.cat(masks, 1)


def dense_attention(attn, q, k, v, allowed):
    """softmax over the allowed keys, written out: q (B, T, Hq, hd), k and v (B, N, Hkv, hd), allowed (T, N);
    the heads' outputs side by side, (B, T, Hq * hd)."""
    B, T = q.shape[:2]
    G = attn.Hq // attn.Hkv
    k, v = k.repeat_interleave(G, dim=2), v.repeat_interleave(G, dim=2)                  # (B, N, Hq, hd)
    scores = torch.einsum("bthd,bnhd->bhtn", q, k) / math.sqrt(attn.hd)
    y = torch.einsum("bhtn,bnhd->bthd", scores.masked_fill(~allowed, float("-inf")).softmax(-1), v)
    return y.reshape(B, T, -1)


def dense_cross_attention(ca, x, memory):
    """A slow reference: attention over all T * C memory entries with a written-out (T, T*C) mask."""
    B, T, _ = x.shape
    q = ca.Wq(x).view(B, T, ca.Hq, ca.hd)
    if ca.use_rope:
        q = rope(q, torch.arange(T)[:, None], ca.theta)
    return ca.Wo(dense_attention(ca, q, *dense_memory(ca, memory, T)))


def dense_joint_attention(ja, x, memory):
    """A slow reference: one softmax over the tokens 0..t and the allowed predictions, all written out (or,
    for DualAttention, a softmax over each, the two outputs summed)."""
    B, T, _ = x.shape
    q, k, v = ja.Wqkv(x).view(B, T, -1, ja.hd).split([ja.Hq, ja.Hkv, ja.Hkv], 2)
    q, k = rope(q, torch.arange(T)[:, None], ja.theta), rope(k, torch.arange(T)[:, None], ja.theta)
    mk, mv, allowed = dense_memory(ja, memory, T)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    if isinstance(ja, JointAttention):
        return ja.Wo(dense_attention(ja, q, torch.cat([k, mk], 1), torch.cat([v, mv], 1),
                                     torch.cat([causal, allowed], 1)))
    return ja.Wo(dense_attention(ja, q, k, v, causal) + dense_attention(ja, q, mk, mv, allowed))


@pytest.mark.parametrize("mode", CrossAttention.MODES)
@pytest.mark.parametrize("use_rope", [True, False])
def test_cross_attention_matches_dense_reference(mode, use_rope):
    torch.manual_seed(1)
    ca = CrossAttention(D, 4, 2, 6, 1e4, mode, use_rope).eval()
    x = torch.randn(B, T, D)
    memory = [FutureScale(2, torch.randn(B, T, 2, D), 4, 7), FutureScale(1, torch.randn(B, T, 1, D), 2, 3)]
    y = ca(x, memory)
    assert y.shape == (B, T, D)
    torch.testing.assert_close(y, dense_cross_attention(ca, x, memory), atol=1e-5, rtol=0)
    torch.testing.assert_close(in_parts(ca, x, memory, cuts=()), y, atol=1e-5, rtol=0)
    torch.testing.assert_close(in_parts(ca, x, memory), y, atol=1e-5, rtol=0)
    assert_grads(ca.train(), ca(x, memory))


def in_parts(attn, x, memory, cuts=(5, 9)):
    """attn's output through a cache: chunks ending at `cuts` (a prefill, chunks after it), then one by one."""
    cache, out, t0 = Cache(), [], 0
    for t1 in [*cuts, *range((cuts or [0])[-1] + 1, x.shape[1] + 1)]:
        part = [FutureScale(m.k, m.vectors[:, t0:t1], m.first, m.last) for m in memory]
        out.append(attn(x[:, t0:t1], part, t0, cache))
        t0 = t1
    return torch.cat(out, 1)


@pytest.mark.parametrize("cls", [JointAttention, DualAttention])
@pytest.mark.parametrize("mode", CrossAttention.MODES)
@pytest.mark.parametrize("use_rope", [True, False])
@pytest.mark.parametrize("heads", [(4, 2), (2, 2)])
def test_joint_and_dual_attention_match_dense_reference(cls, mode, use_rope, heads):
    """Joint: one softmax over tokens and predictions, the anchor-key construction equals the written-out
    attention, whole and in cached parts, and so do its gradients (which reach the memory through the anchor).
    Dual: the same with a softmax over each."""
    torch.manual_seed(1)
    ja = cls(D, *heads, 6, 1e4, mode, use_rope).eval()
    x = torch.randn(B, T, D, requires_grad=True)
    memory = [FutureScale(2, torch.randn(B, T, 2, D, requires_grad=True), 4, 7),
              FutureScale(1, torch.randn(B, T, 1, D, requires_grad=True), 2, 3)]
    y = ja(x, memory)
    assert y.shape == (B, T, D)
    ref = dense_joint_attention(ja, x, memory)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(in_parts(ja, x, memory), y, atol=1e-5, rtol=0)
    inputs = [x, *(m.vectors for m in memory), *ja.parameters()]
    for g, g_ref in zip(torch.autograd.grad(y.pow(2).sum(), inputs), torch.autograd.grad(ref.pow(2).sum(), inputs)):
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)
    assert_grads(ja.train(), ja(x, memory))


@pytest.mark.parametrize("cls", [CrossAttention, JointAttention, DualAttention])
@pytest.mark.parametrize("mode", CrossAttention.MODES)
def test_shared_memory_kv_reads_the_keys_the_model_attached(cls, mode):
    """shared_kv: no Wkv of its own; keys and values projected once (project_memory) give the same output."""
    torch.manual_seed(3)
    own = cls(D, 4, 2, 6, 1e4, mode, True).eval()
    shared = cls(D, 4, 2, 6, 1e4, mode, True, shared_kv=True).eval()
    assert shared.Wkv is None
    shared.load_state_dict({k: v for k, v in own.state_dict().items() if not k.startswith("Wkv")})
    x = torch.randn(B, T, D)
    memory = [FutureScale(2, torch.randn(B, T, 2, D), 4, 7), FutureScale(1, torch.randn(B, T, 1, D), 2, 3)]
    for m in memory:
        m.kv = project_memory(own.Wkv, [m], 0, 2, 6, 1e4, True)                           # (B, T, C, Hkv, hd) x 2
    torch.testing.assert_close(shared(x, memory), own(x, memory), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode,expected", [("horizon", 3 + 7 + 15), ("self", 3), ("causal", 3 * 20)])
def test_which_predictions_a_query_sees(mode, expected):
    """fs_mult 2, P 3, one vector per chunk: the query at t = 19 is influenced by exactly the predictions
    made at s in (t - b_k, t] for horizon (25), at t for self (3), at every s <= t for causal (60)."""
    torch.manual_seed(2)
    ca = CrossAttention(D, 2, 1, 8, 1e4, mode, True).eval()
    n, x = 20, torch.randn(1, 20, D)
    memory = [FutureScale(k, torch.randn(1, n, 1, D), a, b) for k, (a, b) in enumerate(tiny().chunk_offsets, 1)]
    base = ca(x, memory)[0, -1]
    influential = 0
    for m in memory:
        for s in range(n):
            vectors = m.vectors.clone()
            vectors[0, s] += 1.0
            changed = ca(x, [FutureScale(o.k, vectors if o is m else o.vectors, o.first, o.last) for o in memory])
            influential += bool((changed[0, -1] - base).abs().max() > 1e-6)
            if mode == "horizon" and (changed[0, -1] - base).abs().max() > 1e-6:
                assert s + m.last >= n, f"scale {m.k}: a stale prediction from s={s} was seen"
    assert influential == expected


# ------------------------------------------------------------------ pooling


@pytest.mark.parametrize("pool_type", config.POOL_TYPES)
@pytest.mark.parametrize("num_vectors", [1, 2])
def test_pooler_shapes_and_grads(pool_type, num_vectors):
    pooler = Pooler(pool_type, D, 4, num_vectors, output_linear=True, bias=True)
    x = torch.randn(B, T, 4, D, requires_grad=True)
    y = pooler(x)
    assert y.shape == (B, T, num_vectors, D)
    y.pow(2).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in pooler.named_parameters():
        assert p.grad is not None, name


def test_parameter_free_pool_values():
    x = torch.arange(24.0).view(1, 1, 4, 6)
    torch.testing.assert_close(Pooler("sum", 6, 4, 2)(x)[0, 0], torch.stack([x[0, 0, :2].sum(0), x[0, 0, 2:].sum(0)]))
    torch.testing.assert_close(Pooler("mean", 6, 4, 1)(x)[0, 0, 0], x[0, 0].mean(0))
    torch.testing.assert_close(Pooler("max", 6, 4, 1)(x)[0, 0, 0], x[0, 0, 3])
    assert not list(Pooler("mean", 6, 4, 1).parameters())
    with pytest.raises(ValueError):
        Pooler("mean", 6, 4, 3)
    with pytest.raises(ValueError, match="parametric_sum"):
        Pooler("median", 6, 4, 1)


def test_compression_schedule_matches_the_seed_formulas():
    assert [compression("constant", 2, i) for i in range(4)] == [2, 2, 2, 2]
    assert [compression("linear", 1, i) for i in range(4)] == [1, 2, 3, 4]
    assert [compression("root", 2, i) for i in range(4)] == [1, 1, 1, 2]
    assert [compression("log", 2, i) for i in range(4)] == [1, 2, 2, 3]
    assert [compression("poly", 2, i) for i in range(3)] == [1, 4, 9]
    with pytest.raises(ValueError, match="constant"):
        compression("exp", 2, 0)


# ------------------------------------------------------------------ loss


def test_chunk_windows_and_masks():
    # vocab_len 29: eos 30, pad 31. targets[:, i] is the token after input i.
    targets = torch.tensor([[1, 2, 3, 4, 5, 6, 30, 8, 9, 10]])
    ids = chunk_windows(targets, T=6, first=2, last=3, pad_id=31)
    # position i's chunk = columns i+1 .. i+2
    assert ids.tolist() == [[[2, 3], [3, 4], [4, 5], [5, 6], [6, 30], [30, 8]]]
    assert chunk_valid(ids, 30, 31).tolist() == [[True, True, True, True, False, False]]
    # running past the columns given: padded, and so masked
    ids = chunk_windows(targets, T=10, first=4, last=7, pad_id=31)
    valid = chunk_valid(ids, 30, 31)
    assert ids.shape == (1, 10, 4) and ids[0, 9].tolist() == [31] * 4
    assert valid.tolist() == [[False, False, False, False, False, False, False, False, False, False]]
    targets = torch.arange(20).unsqueeze(0)
    ids = chunk_windows(targets, T=10, first=4, last=7, pad_id=31)
    assert chunk_valid(ids, 30, 31)[0].tolist() == [True] * 10
    assert ids[0, 9].tolist() == [12, 13, 14, 15]


def _rank_logits(ids, V, sign=1.0):
    """Logits whose softmax is (close to) the order target of ids (sign=-1: far from it)."""
    w = order_target(ids)
    probs = torch.zeros(*ids.shape[:-1], V).scatter_add_(-1, ids, w)
    return sign * torch.log(probs.clamp(min=1e-30))


@pytest.mark.parametrize("kind", config.FS_LOSSES)
def test_chunk_loss_kinds(kind):
    valid = torch.ones(B, T, dtype=torch.bool)
    if kind == "rank":  # targets are token ids (B, T, C, W), predictions vocabulary logits
        V = 29
        target = torch.randint(0, V, (B, T, 2, 4))
        near_pred, far_pred = _rank_logits(target, V), _rank_logits(target, V, sign=-1)
    else:
        target = torch.rand(B, T, 2, D).round() if kind == "bce" else torch.randn(B, T, 2, D)
        near_pred = 50 * (target - 0.5) if kind == "bce" else target
        far_pred = -50 * (target - 0.5) if kind == "bce" else -target
    far = chunk_loss(far_pred, target, valid, kind)
    near = chunk_loss(near_pred, target, valid, kind)
    assert near < 1e-3 < far
    # masked positions do not count: a terrible prediction there changes nothing
    pred = near_pred.clone()
    valid[:, -3:] = False
    pred[:, -3:] = far_pred[:, -3:]
    assert chunk_loss(pred, target, valid, kind) < 1e-3
    assert chunk_loss(pred, target, torch.zeros_like(valid), kind) == 0


def test_order_target_ranks_first_comings_by_how_soon():
    # a window of offsets 4..7 holding tokens 5, 6, 5, 7: scores 4, 3, (repeat), 1 -> softmax over them
    w = order_target(torch.tensor([[5, 6, 5, 7]]))
    expected = torch.tensor([math.e ** 4, math.e ** 3, 0, math.e ** 1])
    torch.testing.assert_close(w, (expected / expected.sum())[None])
    assert order_target(torch.tensor([[3, 3, 3]])).tolist() == [[1.0, 0.0, 0.0]]  # one token: all its weight
    # each place weighs e times the next, whatever the window's length
    w = order_target(torch.arange(8)[None])
    torch.testing.assert_close(w[0, :-1] / w[0, 1:], torch.full((7,), math.e))


def test_rank_loss_is_the_kl_to_the_dense_order_target_with_listnets_gradient():
    V = 29
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 6, (3, 5, 4), generator=g)  # small ids: repeats within a window are common
    logits = torch.randn(3, 5, V, generator=g, requires_grad=True)
    # the dense reference: scores W - j at first comings, -inf elsewhere, softmax over the vocabulary
    scores = torch.full((3, 5, V), float("-inf"))
    for b in range(3):
        for t in range(5):
            for j, v in reversed(list(enumerate(ids[b, t].tolist()))):  # the first coming is written last
                scores[b, t, v] = 4 - j
    target = scores.softmax(-1)
    cross = -(target * logits.log_softmax(-1)).sum(-1)                  # ListNet: cross-entropy
    entropy = -torch.special.xlogy(target, target).sum(-1)
    loss = rank_loss(logits, ids)
    torch.testing.assert_close(loss, cross - entropy, atol=1e-5, rtol=0)
    assert (loss > -1e-6).all()
    (g_ref,) = torch.autograd.grad(cross.sum(), logits)
    (g_got,) = torch.autograd.grad(loss.sum(), logits)
    torch.testing.assert_close(g_got, g_ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("schedule", config.FS_LAMBDA_SCHEDULES)
def test_fs_weights_follow_their_schedule(schedule):
    cfg = tiny(fs_lambda_schedule=schedule, fs_lambda_end=0.6, fs_loss_lambda=0.5)  # P = 3 chunks
    lam = [0.5, 0.25, 0.125]
    at = {f: [w / l for w, l in zip(fs_weights(cfg, f), lam)] for f in (0, 0.1, 0.3, 0.5, 0.6, 0.9, 1)}
    assert at[0] == pytest.approx([1, 1, 1])
    if schedule == "constant":
        assert all(v == pytest.approx([1, 1, 1]) for v in at.values())
    elif schedule == "decay":  # every chunk at once, linearly, 0 from 0.6 on
        assert at[0.3] == pytest.approx([0.5] * 3) and at[0.5] == pytest.approx([1 / 6] * 3)
        assert at[0.6] == at[0.9] == at[1] == pytest.approx([0, 0, 0])
    else:  # reverse: chunk 3 over 0..0.2, chunk 2 over 0.2..0.4, chunk 1 over 0.4..0.6
        assert at[0.1] == pytest.approx([1, 1, 0.5]) and at[0.3] == pytest.approx([1, 0.5, 0])
        assert at[0.5] == pytest.approx([0.5, 0, 0]) and at[0.6] == pytest.approx([0, 0, 0])
    assert fs_weights(tiny(fs_periods=0, fs_lambda_schedule=schedule), 0.5) == []


def test_set_progress_weighs_the_total_and_leaves_the_parts_unweighted():
    x = torch.randint(0, 29, (B, T))
    y = torch.randint(0, 29, (B, T + tiny().lookahead - 1))
    torch.manual_seed(0)
    model = Model(tiny(fs_lambda_schedule="decay", fs_lambda_end=0.5, fs_loss_lambda=0.5))
    totals = {}
    for f in (0.0, 0.25, 0.5):
        model.loss_fn.set_progress(f)
        loss = model(x, y)[1].item()
        parts = {k: float(v) for k, v in model.loss_parts.items()}
        expected = parts["ntp_loss"] + sum(w * parts[f"fs_loss_{k}"]
                                           for k, w in enumerate(fs_weights(model.cfg, f), start=1))
        assert loss == pytest.approx(expected, rel=1e-6)
        totals[f] = loss
    assert totals[0.0] > totals[0.25] > totals[0.5] == pytest.approx(parts["ntp_loss"], rel=1e-6)
    # the weights are not part of the saved model: a state dict has no such entry
    assert not any("fs_weight" in k for k in model.state_dict())
    # a constant schedule ignores set_progress
    constant = Model(tiny(fs_loss_lambda=0.5))
    before = constant(x, y)[1].item()
    constant.loss_fn.set_progress(0.9)
    assert constant(x, y)[1].item() == before


def test_rank_targets_are_the_chunk_ids_and_the_loss_reads_them_through_the_output_layer():
    cfg = tiny(fs_loss="rank", fs_periods=2, compress_freq="linear", compress_freq_n=1)  # chunk k in k vectors
    loss = Loss(cfg)
    assert len(loss.poolers) == 0
    y = torch.arange(20).unsqueeze(0) % 29
    (ids1, _), (ids2, _) = loss.targets(y, T=4, embedding=torch.nn.Embedding(cfg.vocab_size, D))
    assert ids1.shape == (1, 4, 1, 2) and ids1[0, 0, 0].tolist() == [1, 2]      # +2..+3 of position 0
    assert ids2.shape == (1, 4, 2, 2) and ids2[0, 1].tolist() == [[4, 5], [6, 7]]  # +4..+7 of position 1, halved
    model = Model(cfg)
    x, y = torch.randint(0, 29, (B, T)), torch.randint(0, 29, (B, T + cfg.lookahead - 1))
    model(x, y)
    (ids, valid), *_ = model.loss_fn.targets(y, T, model.embedding)
    logits = model.logits(model.final_norm(model.future[1]))
    ref = (rank_loss(logits, ids).mean(-1) * valid).sum() / valid.sum()
    assert float(model.loss_parts["fs_loss_1"]) == pytest.approx(ref.item(), rel=1e-5)
    assert "fs_target_cos_1" not in model.loss_parts


def test_cosine_loss_is_one_minus_cosine_similarity_with_its_gradients():
    pred, target = torch.randn(B, T, 2, D, requires_grad=True), torch.randn(B, T, 2, D, requires_grad=True)
    valid = torch.rand(B, T) > 0.3
    ref = ((1 - F.cosine_similarity(pred, target, dim=-1)).mean(-1) * valid).sum() / valid.sum()
    loss = chunk_loss(pred, target, valid, "cosine")
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=0)
    for g, g_ref in zip(torch.autograd.grad(loss, [pred, target]), torch.autograd.grad(ref, [pred, target])):
        torch.testing.assert_close(g, g_ref, atol=1e-7, rtol=1e-5)


def test_target_cosine_detects_collapse():
    valid = torch.ones(B, T, dtype=torch.bool)
    assert float(target_cosine(torch.ones(B, T, 1, D), valid)) == pytest.approx(1.0)
    assert abs(float(target_cosine(torch.randn(B, T, 1, D), valid))) < 0.2
    assert torch.isnan(target_cosine(torch.randn(B, T, 1, D), torch.zeros_like(valid)))


def test_loss_parts_and_weighting():
    cfg = tiny(fs_loss_lambda=0.5)
    model = Model(cfg)
    x = torch.randint(0, 29, (B, T))
    y = torch.randint(0, 29, (B, T + cfg.lookahead - 1))
    _, loss = model(x, y)
    parts = {k: float(v) for k, v in model.loss_parts.items()}
    assert set(parts) >= {"ntp_loss", "fs_loss_1", "fs_loss_2", "fs_loss_3", "total_loss", "fs_target_cos_1"}
    expected = parts["ntp_loss"] + sum(0.5 ** k * parts[f"fs_loss_{k}"] for k in (1, 2, 3))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["ntp_loss"] == pytest.approx(F.cross_entropy(model(x)[0].flatten(0, 1), y[:, :T].flatten()).item(),
                                              rel=1e-5)


def test_detached_targets_give_no_gradient_to_the_embedding_through_the_targets():
    y = torch.randint(0, 29, (B, T + tiny().lookahead - 1))
    for detach, expect_grad in ((True, False), (False, True)):
        model = Model(tiny(fs_loss_lambda=1.0, fs_detach_targets=detach))
        targets = model.loss_fn.targets(y, T, model.embedding)
        assert targets[0][0].requires_grad == expect_grad


def test_bce_targets_are_bags_of_the_chunk_tokens():
    cfg = tiny(fs_loss="bce")
    loss = Loss(cfg)
    y = torch.arange(20).unsqueeze(0) % 29
    (bag, valid), *_ = loss.targets(y, T=4, embedding=torch.nn.Embedding(cfg.vocab_size, D))
    assert bag.shape == (1, 4, 1, cfg.vocab_size)
    assert bag[0, 0, 0].nonzero().flatten().tolist() == [1, 2]  # chunk +2..+3 of position 0: columns 1, 2


# ------------------------------------------------------------------ layer and model


@pytest.mark.parametrize("second_resid_norm", [False, True])
@pytest.mark.parametrize("fs_attention", config.FS_ATTENTIONS)
def test_layer_shapes_and_grads(second_resid_norm, fs_attention):
    cfg = tiny(second_resid_norm=second_resid_norm, fs_attention=fs_attention)
    layer = Layer(cfg, cross_attention=True)
    memory = [FutureScale(1, torch.randn(B, T, 1, D), 2, 3)]
    y = layer(torch.randn(B, T, D), 0, None, memory)
    assert y.shape == (B, T, D)
    assert_grads(layer, y)


def test_parallel_layer_adds_both_attentions_from_one_norm():
    layer = Layer(tiny(fs_attention="parallel"), cross_attention=True)
    assert not hasattr(layer, "ca_norm")
    x, memory = torch.randn(B, T, D), [FutureScale(1, torch.randn(B, T, 1, D), 2, 3)]
    h = layer.attn_norm(x)
    mid = x + layer.attn(h) + layer.cross_attn(h, memory)
    torch.testing.assert_close(layer(x, 0, None, memory), mid + layer.mlp(layer.mlp_norm(mid)), atol=1e-6, rtol=0)


def test_future_sight_layer_options_change_the_parameters_as_documented():
    params = {name: dict(Model(tiny(**kw)).named_parameters()) for name, kw in {
        "sequential": {}, "parallel": {"fs_attention": "parallel"}, "joint": {"fs_attention": "joint"},
        "dual": {"fs_attention": "dual"}, "shared": {"fs_shared_memory_kv": True},
        "joint-shared": {"fs_attention": "joint", "fs_shared_memory_kv": True}, "no-head-norm": {"fs_head_norm": False},
    }.items()}
    size = {name: sum(p.numel() for p in ps.values()) for name, ps in params.items()}
    kv = params["sequential"]["fs_layers.0.cross_attn.Wkv.weight"].numel()
    cross = sum(p.numel() for n, p in params["sequential"].items() if n.startswith("fs_layers.0.c"))  # ca_norm, attn
    assert size["parallel"] == size["sequential"] - 3 * D                                   # no ca_norm
    assert size["joint"] == size["sequential"] - 3 * (cross - kv)                           # a memory Wkv stays
    assert size["shared"] == size["sequential"] - 2 * kv                                   # one Wkv instead of three
    assert size["joint-shared"] == size["joint"] - 2 * kv
    assert size["dual"] == size["joint"]                                                   # same parameters
    assert size["no-head-norm"] == size["sequential"] - 3 * D
    assert "memory_kv.weight" in params["shared"] and "fs_layers.2.attn.Wkv.weight" in params["joint"]
    assert not any(".Wkv." in n for n in params["joint-shared"])


@pytest.mark.parametrize("kw,message", [({"fs_attention": "both"}, "fs_attention='both'.*sequential"),
                                        ({"fs_shared_memory_kv": "yes"}, "fs_shared_memory_kv='yes'"),
                                        ({"fs_attention": "dual", "ca_head_dim": 8}, "ca_head_dim=8.*dual")])
def test_future_sight_layer_options_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)
    assert tiny(fs_attention="joint", ca_num_q_heads=4).ca_head_dim == tiny().head_dim  # derived from self-attention


def test_baseline_has_no_future_sight_parameters():
    base = Model(tiny(fs_periods=0))
    assert not any(n.startswith(("heads", "fs_layers", "loss_fn")) for n, _ in base.named_parameters())
    assert len(base.body) == 4 and len(base.fs_layers) == 0
    ff = Model(tiny())
    assert len(ff.body) == 1 and len(ff.fs_layers) == 3 and len(ff.heads) == 3
    assert ff.num_params() > base.num_params()
    _, loss = base(torch.randint(0, 29, (B, T)), torch.randint(0, 29, (B, T)))
    assert set(base.loss_parts) == {"ntp_loss"}


@pytest.mark.parametrize("kw", [{}, {"fs_periods": 0}, {"weight_tying": False}, {"fs_output_layer": "layer"},
                                {"fs_output_layer": "mlp", "fs_arrangement": "parallel"},
                                {"fs_attention": "joint", "fs_shared_memory_kv": True},
                                {"fs_attention": "joint", "fs_memory": "causal", "fs_arrangement": "parallel"},
                                {"fs_attention": "parallel", "fs_shared_memory_kv": True, "fs_memory": "self"},
                                {"fs_attention": "dual", "fs_shared_memory_kv": True, "fs_head_norm": False}])
def test_model_shapes_and_every_parameter_gets_a_gradient(kw):
    cfg = tiny(**kw)
    model = Model(cfg)
    x = torch.randint(0, cfg.vocab_size, (B, T))
    y = torch.randint(0, cfg.vocab_len, (B, T + cfg.lookahead - 1))
    logits, loss = model(x, y)
    assert logits.shape == (B, T, cfg.vocab_size) and loss.ndim == 0
    assert model(x)[1] is None
    assert {k: v.shape for k, v in model.future.items()} == {k: (B, T, 1, D) for k in range(1, cfg.fs_periods + 1)}
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


def test_weight_tying_shares_the_embedding():
    model = Model(tiny(weight_tying=True))
    assert model.output is None
    untied = Model(tiny(weight_tying=False))
    assert untied.num_params() == model.num_params() + untied.output.weight.numel()


def test_targets_that_do_not_fit_are_a_clear_error():
    model = Model(tiny())
    with pytest.raises(ValueError, match="need \\(2, >= 12\\) columns"):
        model(torch.zeros(B, T, dtype=torch.long), torch.zeros(B, T - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="do not fit"):
        model(torch.zeros(B, T, dtype=torch.long), torch.zeros(B + 1, T, dtype=torch.long))
    _, loss = model(torch.zeros(B, T, dtype=torch.long), torch.zeros(B, T, dtype=torch.long))  # no look-ahead: fine
    assert torch.isfinite(loss)


def test_too_long_input_is_a_clear_error():
    model = Model(tiny(max_seq_len=16))
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, 16, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("kw", [{}, {"fs_memory": "causal", "fs_output_layer": "layer"}, {"fs_loss": "bce"},
                                {"fs_attention": "joint", "fs_shared_memory_kv": True},
                                {"fs_attention": "joint", "fs_memory": "causal"},
                                {"fs_attention": "dual", "fs_shared_memory_kv": True, "fs_head_norm": False}])
def test_bf16_autocast_trains_and_stays_close_to_fp32(kw):
    """The CUDA path trains under bf16 autocast; on the CPU the same code runs, as a check of dtypes."""
    torch.manual_seed(0)
    cfg = tiny(**kw)
    model = Model(cfg).eval()
    x = torch.randint(0, cfg.vocab_len, (B, T))
    y = torch.randint(0, cfg.vocab_len, (B, T + cfg.lookahead - 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits16, loss = model(x, y)
        cache = model.new_cache()
        step = torch.cat([model(x[:, t:t + 1], cache=cache)[0] for t in range(T)], 1)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    logits32, _ = model(x)
    assert (logits16.float() - logits32).abs().max() < 0.05
    assert (step.float() - logits32).abs().max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{"fs_periods": 0}, {}, {"fs_memory": "causal", "fs_loss": "bce"},
                                {"fs_attention": "joint", "fs_shared_memory_kv": True},
                                {"fs_attention": "parallel", "fs_memory": "self"},
                                {"fs_attention": "dual", "fs_shared_memory_kv": True, "fs_head_norm": False}])
def test_training_forward_traces_without_graph_breaks(kw):
    """torch.compile (the CUDA option of training) gets the whole training forward as one graph: no
    data-dependent shapes, no .item() syncs."""
    import torch._dynamo

    torch._dynamo.reset()
    cfg = tiny(**kw)
    model = Model(cfg)
    x = torch.randint(0, cfg.vocab_len, (B, T))
    y = torch.randint(0, cfg.vocab_len, (B, T + cfg.lookahead - 1))
    explanation = torch._dynamo.explain(model)(x, y)
    assert explanation.graph_break_count == 0, explanation.break_reasons
