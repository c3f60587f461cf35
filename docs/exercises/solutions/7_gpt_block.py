# %% [markdown]
# # Exercise 7: one GPT block, backward by hand
#
# The page [One GPT block, backward by hand](../gpt-block-by-hand.md) as
# stubs. The forward is GPT-2's pre-LayerNorm block, one fused op a line,
# checked against `gpt.model.Block` below: $x_1 = x + \mathrm{Attn}(\mathrm{LN}_1(x))$,
# $\mathrm{out} = x_1 + \mathrm{MLP}(\mathrm{LN}_2(x_1))$. Write the four
# helpers (each the one expression of an earlier exercise), then the block's
# backward line by line. The two residual adds are where the gradient
# **splits** (an add sends it unchanged to both inputs) and **joins** ($x$
# and $x_1$ each feed two branches, so their gradients are sums).
#
# Check with `python -m tinytensor exercise 7`.

# %%
import math

import numpy as np

import tinytensor as tt
import tinytensor.functional as F
from gpt.model import Block, GPTConfig

B, T, C, H = 2, 5, 8, 2
D, EPS = C // H, 1e-5
tt.manual_seed(7)
block = Block(GPTConfig(vocab_size=16, block_size=T, n_layer=1, n_head=H, n_embd=C)).to(dtype="float64")
block.eval()
rng = np.random.default_rng(7)
for p in block.parameters():                          # random everywhere, not GPT-2's 1s and 0s
    p.data[...] = rng.normal(0.0, 0.3, p.shape)
P = dict(block.named_parameters())                    # "ln_1.weight", "attn.c_attn.weight", ...
x = tt.tensor(rng.normal(size=(B, T, C)), requires_grad=True, dtype="float64")
dout_given = rng.normal(size=(B, T, C))

# %%
h1 = F.layer_norm(x, P["ln_1.weight"], P["ln_1.bias"], eps=EPS)        # (B, T, C)
qkv = F.linear(h1, P["attn.c_attn.weight"], P["attn.c_attn.bias"])   # (B, T, 3C)
heads = qkv.reshape(B, T, 3 * H, D).swapaxes(1, 2)                   # (B, 3H, T, D)
q, k, v = heads.split([H, H, H], axis=1)                             # (B, H, T, D) each
o = F.scaled_dot_product_attention(q, k, v, causal=True)             # (B, H, T, D)
y = o.swapaxes(1, 2).reshape(B, T, C)                                # (B, T, C) heads side by side
a = F.linear(y, P["attn.c_proj.weight"], P["attn.c_proj.bias"])      # (B, T, C)
x1 = x + a                                                           # (B, T, C) residual
h2 = F.layer_norm(x1, P["ln_2.weight"], P["ln_2.bias"], eps=EPS)     # (B, T, C)
f = F.linear(h2, P["mlp.c_fc.weight"], P["mlp.c_fc.bias"])           # (B, T, 4C)
u = F.gelu(f)                                                        # (B, T, 4C) tanh form
m = F.linear(u, P["mlp.c_proj.weight"], P["mlp.c_proj.bias"])        # (B, T, C)
out = x1 + m                                                         # (B, T, C) residual
loss = (out * dout_given).sum()                                      # so that dout = dout_given
assert np.allclose(out.data, block(x).data, rtol=1e-12, atol=1e-12)  # the model's own block, the same
forward = {"x": x, "ln_1.weight": P["ln_1.weight"], "ln_1.bias": P["ln_1.bias"], "h1": h1,
           "attn.c_attn.weight": P["attn.c_attn.weight"], "attn.c_attn.bias": P["attn.c_attn.bias"], "qkv": qkv,
           "heads": heads, "q": q, "k": k, "v": v, "o": o, "y": y, "attn.c_proj.weight": P["attn.c_proj.weight"],
           "attn.c_proj.bias": P["attn.c_proj.bias"], "a": a, "x1": x1, "ln_2.weight": P["ln_2.weight"],
           "ln_2.bias": P["ln_2.bias"], "h2": h2, "mlp.c_fc.weight": P["mlp.c_fc.weight"],
           "mlp.c_fc.bias": P["mlp.c_fc.bias"], "f": f, "u": u, "mlp.c_proj.weight": P["mlp.c_proj.weight"],
           "mlp.c_proj.bias": P["mlp.c_proj.bias"], "m": m, "out": out}

# %% [markdown]
# The helpers: each takes the output's gradient and the forward's inputs
# (NumPy arrays) and recomputes what it needs.

# %%
K_GELU, A_GELU = math.sqrt(2 / math.pi), 0.044715


def layernorm_backward(dy, x, w):
    """dx, dw, db of y = (x - mean) rstd w + b over the last axis; x (..., C)."""
    # answer { return ..., ..., ...
    rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + EPS)
    xhat = (x - x.mean(-1, keepdims=True)) * rstd
    g = dy * w
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = tuple(range(dy.ndim - 1))
    return dx, (dy * xhat).sum(rows), dy.sum(rows)
    # answer }


def linear_backward(dy, x, w):
    """dx, dw, db of y = x w^T + b; x (..., in), w (out, in)."""
    # answer { return ..., ..., ...
    dx = dy @ w
    dw = dy.reshape(-1, dy.shape[-1]).T @ x.reshape(-1, x.shape[-1])   # one matmul over every row
    return dx, dw, dy.reshape(-1, dy.shape[-1]).sum(0)
    # answer }


def gelu_backward(dy, x):
    """dx of GELU's tanh form, 0.5 x (1 + tanh(k (x + a x^3)))."""
    # answer { return ...
    t = np.tanh(K_GELU * (x + A_GELU * x ** 3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K_GELU * (1 + 3 * A_GELU * x * x))
    # answer }


def attention_backward(do, q, k, v):
    """dq, dk, dv of causal softmax(q k^T / sqrt(D)) v; each (B, H, T, D)."""
    # answer { return ..., ..., ...
    n = q.shape[-2]
    s = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    s = np.where(np.triu(np.ones((n, n), dtype=bool), k=1), -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = do @ v.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))      # masked entries: p = 0, so ds = 0
    dq = ds @ k / math.sqrt(q.shape[-1])
    dk = ds.swapaxes(-1, -2) @ q / math.sqrt(q.shape[-1])
    return dq, dk, p.swapaxes(-1, -2) @ do
    # answer }


# %% [markdown]
# The block's backward, from the last forward line to the first.

# %%
W = {name: t.data for name, t in P.items()}
dout = dout_given  # answer
dm = dout  # answer: out = x1 + m
du, dmproj_w, dmproj_b = linear_backward(dm, u.data, W["mlp.c_proj.weight"])  # answer
df = gelu_backward(du, f.data)  # answer
dh2, dfc_w, dfc_b = linear_backward(df, h2.data, W["mlp.c_fc.weight"])  # answer
dx1_mlp, dln2_w, dln2_b = layernorm_backward(dh2, x1.data, W["ln_2.weight"])  # answer
dx1 = dout + dx1_mlp  # answer: x1 feeds the residual and LN_2: the two gradients join
da = dx1  # answer: x1 = x + a
dy, dproj_w, dproj_b = linear_backward(da, y.data, W["attn.c_proj.weight"])  # answer
do = dy.reshape(B, T, H, D).swapaxes(1, 2)  # answer: undo "heads side by side"
dq, dk, dv = attention_backward(do, q.data, k.data, v.data)  # answer
dheads = np.concatenate([dq, dk, dv], axis=1)  # answer: a split's backward concatenates
dqkv = dheads.swapaxes(1, 2).reshape(B, T, 3 * C)  # answer
dh1, dattn_w, dattn_b = linear_backward(dqkv, h1.data, W["attn.c_attn.weight"])  # answer
dx_attn, dln1_w, dln1_b = layernorm_backward(dh1, x.data, W["ln_1.weight"])  # answer
dx = dx1 + dx_attn  # answer: x feeds the residual and LN_1

grads = {"x": dx, "ln_1.weight": dln1_w, "ln_1.bias": dln1_b, "h1": dh1, "attn.c_attn.weight": dattn_w,
         "attn.c_attn.bias": dattn_b, "qkv": dqkv, "heads": dheads, "q": dq, "k": dk, "v": dv, "o": do, "y": dy,
         "attn.c_proj.weight": dproj_w, "attn.c_proj.bias": dproj_b, "a": da, "x1": dx1, "ln_2.weight": dln2_w,
         "ln_2.bias": dln2_b, "h2": dh2, "mlp.c_fc.weight": dfc_w, "mlp.c_fc.bias": dfc_b, "f": df, "u": du,
         "mlp.c_proj.weight": dmproj_w, "mlp.c_proj.bias": dmproj_b, "m": dm, "out": dout}

# %% [markdown]
# Run this file (`python 7_gpt_block.py`) or this cell to see the table; the
# same as `python -m tinytensor exercise 7`.

# %%
if __name__ == "__main__":
    from tinytensor.exercise import report

    report(forward, loss, grads)
