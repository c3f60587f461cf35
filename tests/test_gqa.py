"""Grouped-query attention: H query heads over Hkv = H / G key/value heads in the fused
attention op. Finite differences over group sizes (G = 1: multi-head, Hkv = 1: one
shared head), agreement with the composed reference (which repeats k and v), agreement
with multi-head attention over explicitly repeated heads, and no repeated copy saved."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_functional import BLOCKINGS, assert_same, attention_blocks, keep_mask, rand, seeds

import tinytensor as tt
from tinytensor import functional as F
from tinytensor import reference as R


@st.composite
def gqa_case(draw, max_t=12):
    b, kv_heads = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    groups = draw(st.integers(1, 4))
    tk = draw(st.integers(1, max_t))
    causal = draw(st.booleans())
    tq = draw(st.integers(1, tk)) if causal else draw(st.integers(1, max_t))
    d, dv = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = kv_heads * groups
    mask = None
    seed = draw(seeds)
    if draw(st.booleans()):
        # one mask per query head, or one for all: either broadcasts over the groups
        mask = np.random.default_rng(seed).random(draw(st.sampled_from([(b, h, tq, tk), (tq, tk)]))) < 0.7
        mask[..., 0] = True
    dropout_p = draw(st.sampled_from([0.0, 0.0, 0.3]))
    return (b, h, kv_heads, tq, tk, d, dv), causal, mask, dropout_p, seed


def gqa_inputs(shape, seed, device="cpu"):
    b, h, kv_heads, tq, tk, d, dv = shape
    return (rand((b, h, tq, d), seed, device=device), rand((b, kv_heads, tk, d), seed + 1, device=device),
            rand((b, kv_heads, tk, dv), seed + 2, device=device))


@pytest.mark.parametrize("blocking", BLOCKINGS)
@given(case=gqa_case())
def test_gqa_gradcheck(blocking, case, device):
    shape, causal, mask, dropout_p, seed = case

    def fn(q, k, v):
        tt.manual_seed(seed)
        return F.scaled_dot_product_attention(q, k, v, causal=causal, attn_mask=mask, dropout_p=dropout_p)

    with attention_blocks(*BLOCKINGS[blocking]):
        assert tt.gradcheck(fn, gqa_inputs(shape, seed, device), max_elements=40)


@pytest.mark.parametrize("blocking", BLOCKINGS)
@given(case=gqa_case())
def test_gqa_matches_the_reference(blocking, case, device):
    shape, causal, mask, dropout_p, seed = case
    b, h, _, tq, tk, _, _ = shape
    keep = keep_mask((b, h, tq, tk), dropout_p, seed) if dropout_p else None

    def fused(q, k, v):
        tt.manual_seed(seed)
        return F.scaled_dot_product_attention(q, k, v, causal, mask, dropout_p)

    with attention_blocks(*BLOCKINGS[blocking]):
        assert_same(fused, lambda q, k, v: R.scaled_dot_product_attention(q, k, v, causal, mask, dropout_p, None, keep),
                    gqa_inputs(shape, seed, device), seed, rtol=1e-6, atol=1e-9)


@given(groups=st.integers(1, 4), kv_heads=st.integers(1, 3), t=st.integers(1, 40), seed=seeds)
def test_gqa_is_multi_head_attention_over_repeated_heads(groups, kv_heads, t, seed):
    # the oracle is plain NumPy: each kv head copied G times, and the copies' gradients added up
    q, k, v = gqa_inputs((2, kv_heads * groups, kv_heads, t, t, 4, 3), seed)
    out = F.scaled_dot_product_attention(q, k, v)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(g)
    k_rep, v_rep = (tt.tensor(np.repeat(a.numpy(), groups, axis=1), requires_grad=True) for a in (k, v))
    q_mha = tt.tensor(q.numpy(), requires_grad=True)
    mha = F.scaled_dot_product_attention(q_mha, k_rep, v_rep)
    mha.backward(g)
    np.testing.assert_allclose(out.numpy(), mha.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(q.grad, q_mha.grad, rtol=1e-10, atol=1e-13)
    for shared, repeated in ((k, k_rep), (v, v_rep)):
        summed = repeated.grad.reshape(2, kv_heads, groups, t, -1).sum(axis=2)
        np.testing.assert_allclose(shared.grad, summed, rtol=1e-10, atol=1e-13)


def test_gqa_saves_no_repeated_copy_of_k_and_v():
    q, k, v = gqa_inputs((1, 8, 2, 5, 5, 4, 4), 0)
    node = F.scaled_dot_product_attention(q, k, v)._ctx
    for saved, given_ in ((node.k, k), (node.v, v)):
        assert np.shares_memory(saved, given_.data) and saved.size == given_.size
    assert sum(p.size for *_, p, _ in node.blocks) == 8 * 5 * 5   # one P per query head, as for MHA


def test_gqa_single_query_step_against_a_longer_cache():
    q, k, v = gqa_inputs((2, 6, 2, 9, 9, 4, 4), 1)
    full = F.scaled_dot_product_attention(q, k, v).numpy()
    last = F.scaled_dot_product_attention(q[:, :, -1:], k, v).numpy()
    np.testing.assert_allclose(last, full[:, :, -1:], rtol=1e-12)


def test_gqa_shape_errors():
    q = tt.tensor(np.zeros((1, 6, 4, 3)))
    k = v = tt.tensor(np.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="H a multiple of Hkv"):
        F.scaled_dot_product_attention(q, k, v)
    with pytest.raises(ValueError, match="same leading axes"):
        F.scaled_dot_product_attention(q, tt.tensor(np.zeros((2, 3, 4, 3))), tt.tensor(np.zeros((2, 3, 4, 3))))
