# %% [markdown]
# # Exercise 8: the whole GPT, then train it with your backward
#
# GPT-2 end to end, tiny: token and position embeddings, `N_LAYER` blocks
# (exercise 7), the final layer norm, the LM head tied to the token
# embedding (so `wte.weight` gets **two** gradients, one from the head and one
# from the embedding, added), and the loss. Then train it for 100 steps with
# your backward and your AdamW, in plain NumPy (the forward's values come from
# tinytensor, the gradients and the updates are yours), and see your loss
# match the engine's (`gpt.GPT` with `tinytensor.optim.AdamW`) at every step,
# to 1e-9 in float64.
#
# Check with `python -m tinytensor exercise 8`: first every gradient, then
# (once they all match) the 100 steps.

# %%
import math

import numpy as np

import tinytensor as tt
import tinytensor.functional as F
from gpt.model import GPT, GPTConfig

V, T, C, H, N_LAYER, BATCH = 12, 8, 16, 2, 2, 4
D, EPS = C // H, 1e-5
STEPS, ADAMW = 100, dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
config = GPTConfig(vocab_size=V, block_size=T, n_layer=N_LAYER, n_head=H, n_embd=C, dropout=0.0, bias=True)
rng = np.random.default_rng(8)
shapes = {name: p.shape for name, p in GPT(config).named_parameters()}   # "wte.weight", "h.0.ln_1.weight", ...
init = {name: rng.normal(0.0, 0.3, shape) for name, shape in shapes.items()}   # random: nothing can hide
text = np.tile(rng.permutation(V), 40)                                 # a cycle the model can learn
starts = rng.integers(0, len(text) - T - 1, (STEPS, BATCH))
batches = [(np.stack([text[s:s + T] for s in row]), np.stack([text[s + 1:s + T + 1] for s in row])) for row in starts]


def gpt_forward(P, idx, targets):
    """The forward, one named line at a time: (every tensor by name, the loss). P: name -> Tensor."""
    fw = {"wte.weight": P["wte.weight"], "wpe.weight": P["wpe.weight"]}
    fw["tok"] = P["wte.weight"][idx]                                   # (B, T, C)
    fw["pos"] = P["wpe.weight"][np.arange(T)]                          # (T, C)
    x = fw["x0"] = fw["tok"] + fw["pos"]                               # (B, T, C)
    for i in range(N_LAYER):
        L = lambda name: P[f"h.{i}.{name}"]  # noqa: E731
        n = f"h.{i}."
        fw.update({n + name: L(name) for name in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight",
                                                  "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
                                                  "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                                                  "mlp.c_proj.weight", "mlp.c_proj.bias")})
        h1 = fw[n + "h1"] = F.layer_norm(x, L("ln_1.weight"), L("ln_1.bias"), eps=EPS)       # (B, T, C)
        qkv = fw[n + "qkv"] = F.linear(h1, L("attn.c_attn.weight"), L("attn.c_attn.bias"))  # (B, T, 3C)
        heads = qkv.reshape(BATCH, T, 3 * H, D).swapaxes(1, 2)                               # (B, 3H, T, D)
        q, k, v = heads.split([H, H, H], axis=1)                                            # (B, H, T, D)
        fw[n + "q"], fw[n + "k"], fw[n + "v"] = q, k, v
        o = fw[n + "o"] = F.scaled_dot_product_attention(q, k, v, causal=True)               # (B, H, T, D)
        y = fw[n + "y"] = o.swapaxes(1, 2).reshape(BATCH, T, C)                              # (B, T, C)
        a = fw[n + "a"] = F.linear(y, L("attn.c_proj.weight"), L("attn.c_proj.bias"))       # (B, T, C)
        x1 = fw[n + "x1"] = x + a                                                            # (B, T, C)
        h2 = fw[n + "h2"] = F.layer_norm(x1, L("ln_2.weight"), L("ln_2.bias"), eps=EPS)     # (B, T, C)
        f = fw[n + "f"] = F.linear(h2, L("mlp.c_fc.weight"), L("mlp.c_fc.bias"))            # (B, T, 4C)
        u = fw[n + "u"] = F.gelu(f)                                                          # (B, T, 4C)
        m = fw[n + "m"] = F.linear(u, L("mlp.c_proj.weight"), L("mlp.c_proj.bias"))         # (B, T, C)
        x = fw[n + "out"] = x1 + m                                                           # (B, T, C)
    fw["ln_f.weight"], fw["ln_f.bias"] = P["ln_f.weight"], P["ln_f.bias"]
    hf = fw["hf"] = F.layer_norm(x, P["ln_f.weight"], P["ln_f.bias"], eps=EPS)             # (B, T, C)
    logits = fw["logits"] = F.linear(hf, P["wte.weight"])                                  # (B, T, V) tied head
    loss = F.cross_entropy(logits.reshape(BATCH * T, V), targets.reshape(-1))               # ()
    return fw, loss


def tensors(arrays):
    return {name: tt.tensor(a.copy(), requires_grad=True, dtype="float64") for name, a in arrays.items()}


forward, loss = gpt_forward(tensors(init), *batches[0])
model = GPT(config).to(dtype="float64")
model.load_state_dict({name: tt.tensor(a, dtype="float64") for name, a in init.items()})
assert np.isclose(model(*batches[0])[1].item(), loss.item(), rtol=1e-12)   # the model's own forward, the same

# %% [markdown]
# The helpers of exercise 7 (copy yours), then the block's backward with
# names, then the whole model's.

# %%
K_GELU, A_GELU = math.sqrt(2 / math.pi), 0.044715


def layernorm_backward(dy, x, w):
    """dx, dw, db of y = (x - mean) rstd w + b over the last axis; x (..., C)."""
    return ..., ..., ...  # TODO


def linear_backward(dy, x, w):
    """dx, dw, db of y = x w^T + b; x (..., in), w (out, in)."""
    return ..., ..., ...  # TODO


def gelu_backward(dy, x):
    """dx of GELU's tanh form, 0.5 x (1 + tanh(k (x + a x^3)))."""
    return ...  # TODO


def attention_backward(do, q, k, v):
    """dq, dk, dv of causal softmax(q k^T / sqrt(D)) v; each (B, H, T, D)."""
    return ..., ..., ...  # TODO


def block_backward(dout, x, A, W, n, G):
    """The backward of block n ("h.0.", ...) whose input was x, from dout = d(its output): fills
    G[n + name] for each of its tensors (h1 qkv q k v o y a x1 h2 f u m out) and parameters
    ("ln_1.weight", ...), as exercise 7's block backward; returns dx."""
    return ...  # TODO


def gpt_backward(A, W, idx, targets):
    """d(every forward tensor) by name. A: the forward's values by name, W: the parameters (NumPy)."""
    G = {}
    last = f"h.{N_LAYER - 1}.out"
    z = A["logits"] - A["logits"].max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)                    # (B, T, V)
    G["logits"] = ...  # TODO: exercise 3, the mean over B T rows
    G["hf"] = ...  # TODO: logits = hf wte^T
    dwte_head = ...  # TODO: wte's first gradient
    dx, G["ln_f.weight"], G["ln_f.bias"] = ..., ..., ...  # TODO
    for i in reversed(range(N_LAYER)):
        dx = block_backward(dx, A["x0"] if i == 0 else A[f"h.{i - 1}.out"], A, W, f"h.{i}.", G)
    G["x0"] = ...  # TODO
    G["tok"] = ...  # TODO: x0 = tok + pos
    G["pos"] = ...  # TODO: pos (T, C) broadcast over the batch
    G["wpe.weight"] = ...  # TODO: rows 0 .. T-1 of wpe, T = block_size here
    dwte_emb = ...  # TODO: a repeated id adds up
    G["wte.weight"] = ...  # TODO: two gradients into one weight
    return G


A = {name: t.data for name, t in forward.items()}
G = gpt_backward(A, init, *batches[0])
grads = {name: G.get(name, ...) for name in forward}

# %% [markdown]
# AdamW in plain NumPy, as [adamw.md](../adamw.md) derives it (decoupled
# decay, then the moments, then the bias-corrected step; `t` counts from 1),
# and the training loop. The checker runs `train["yours"]` and
# `train["engine"]` once every gradient above is right.


# %%
def adamw_update(p, g, m, v, t, lr, betas, eps, weight_decay):
    """One AdamW step on the array p, in place; m and v (the moments) too."""
    ...  # TODO


def train_yours():
    W = {name: a.copy() for name, a in init.items()}
    M = {name: np.zeros_like(a) for name, a in W.items()}
    S = {name: np.zeros_like(a) for name, a in W.items()}
    losses = []
    for t, (idx, targets) in enumerate(batches, start=1):
        fw, loss = gpt_forward(tensors(W), idx, targets)                  # values only; the gradients are yours
        G = gpt_backward({name: x.data for name, x in fw.items()}, W, idx, targets)
        losses.append(loss.item())
        for name in W:
            adamw_update(W[name], G[name], M[name], S[name], t, **ADAMW)
    return losses


def train_engine():
    model = GPT(config).to(dtype="float64")
    model.load_state_dict({name: tt.tensor(a, dtype="float64") for name, a in init.items()})
    opt = tt.optim.AdamW(model.parameters(), **ADAMW)
    losses = []
    for idx, targets in batches:
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


train = {"yours": train_yours, "engine": train_engine}

# %% [markdown]
# Run this file (`python 8_whole_gpt.py`) or this cell to see the table; the
# same as `python -m tinytensor exercise 8`.

# %%
if __name__ == "__main__":
    from tinytensor.exercise import report

    report(forward, loss, grads, train)
