# %% [markdown]
# # Exercise 2: an MLP step cut into atoms
#
# The forward of a small language-model step, one elementary operation a
# line: an embedding, a linear layer, layer norm as mean / variance / rstd /
# x-hat, GELU (tanh form) in three lines, a second linear layer, and
# cross-entropy as max / exp / sum / log / pick. Write the gradient of every
# line, from the loss back, in plain NumPy, from the forward's values (each
# tensor's `.data`). The recipe of [backprop from zero](../backprop-from-zero.md):
# for each line, write one entry of its derivative in index form, let the
# shapes fix the arrangement, and add over every use.
#
# Check with `python -m tinytensor exercise 2`. The checker lists every
# tensor; the row it marks is the first wrong one walking back from the loss.

# %%
import math

import numpy as np

import tinytensor as tt

rng = np.random.default_rng(2)
N, V, C, Hd = 8, 10, 6, 12                 # rows (tokens), vocabulary, embedding width, hidden width
ids = rng.integers(0, V, N)                # (N,) input token ids
targets = rng.integers(0, V, N)            # (N,) the token to predict at each row
EPS, K_GELU, A_GELU = 1e-5, math.sqrt(2 / math.pi), 0.044715


def param(*shape):                         # random, never 0 or 1: a wrong backward cannot hide
    return tt.tensor(rng.normal(0.0, 0.5, shape), requires_grad=True, dtype="float64")


wte, W1, b1, g, beta, W2, b2 = param(V, C), param(Hd, C), param(Hd), param(Hd), param(Hd), param(V, Hd), param(V)

# %%
emb = wte[ids]                             # (N, C)   row ids[n] of wte
h = emb @ W1.T + b1                        # (N, Hd)
mean = h.mean(axis=-1, keepdims=True)      # (N, 1)
xc = h - mean                              # (N, Hd)
var = (xc * xc).mean(axis=-1, keepdims=True)  # (N, 1)
rstd = (var + EPS) ** -0.5                 # (N, 1)
xhat = xc * rstd                           # (N, Hd)
hn = xhat * g + beta                       # (N, Hd)
u = K_GELU * (hn + A_GELU * hn ** 3)       # (N, Hd)
t = u.tanh()                               # (N, Hd)
act = 0.5 * hn * (1 + t)                   # (N, Hd)  GELU
logits = act @ W2.T + b2                   # (N, V)
lmax = logits.max(axis=-1, keepdims=True)  # (N, 1)   for stability; its gradient is 0 in exact arithmetic
shifted = logits - lmax                    # (N, V)
e = shifted.exp()                          # (N, V)
se = e.sum(axis=-1, keepdims=True)         # (N, 1)
lse = se.log()                             # (N, 1)
logp = shifted - lse                       # (N, V)
picked = logp[np.arange(N), targets]       # (N,)
loss = -picked.mean()                      # ()

forward = {"wte": wte, "emb": emb, "W1": W1, "b1": b1, "h": h, "mean": mean, "xc": xc, "var": var,
           "rstd": rstd, "xhat": xhat, "g": g, "beta": beta, "hn": hn, "u": u, "t": t, "act": act,
           "W2": W2, "b2": b2, "logits": logits, "lmax": lmax, "shifted": shifted, "e": e, "se": se,
           "lse": lse, "logp": logp, "picked": picked}

# %% [markdown]
# Your backward: one line per forward line, from the last. A tensor used
# twice in the forward (`shifted`, `logits`, `hn`, `xc`, `h`) adds the
# gradients of both uses.

# %%
dpicked = np.full(N, -1.0 / N)  # answer: loss = -mean(picked)
dlogp = np.zeros((N, V)); dlogp[np.arange(N), targets] = dpicked  # answer: the pick's scatter
dlse = -dlogp.sum(axis=-1, keepdims=True)  # answer: broadcast in the forward, sum in the backward
dse = dlse / se.data  # answer: d log s = 1/s
de = np.broadcast_to(dse, (N, V)).copy()  # answer: sum in the forward, broadcast in the backward
dshifted = dlogp + de * e.data  # answer: used twice: in logp and in exp
dlmax = -dshifted.sum(axis=-1, keepdims=True)  # answer: ~0
dlogits = dshifted + (logits.data == lmax.data) * dlmax  # answer: two uses; the max's goes to the arg-max
dact = dlogits @ W2.data  # answer: (N, V) @ (V, Hd)
dW2 = dlogits.T @ act.data  # answer: (V, N) @ (N, Hd)
db2 = dlogits.sum(axis=0)  # answer: b2 broadcast over the rows
dt = 0.5 * hn.data * dact  # answer: act = 0.5 hn (1 + t)
du = (1 - t.data ** 2) * dt  # answer: tanh' = 1 - tanh^2
dhn = 0.5 * (1 + t.data) * dact + K_GELU * (1 + 3 * A_GELU * hn.data ** 2) * du  # answer: two uses of hn
dxhat = dhn * g.data  # answer: hn = xhat g + beta
dg = (dhn * xhat.data).sum(axis=0)  # answer: g broadcast over the rows
dbeta = dhn.sum(axis=0)  # answer: beta broadcast over the rows
drstd = (dxhat * xc.data).sum(axis=-1, keepdims=True)  # answer: rstd broadcast over the row
dvar = -0.5 * (var.data + EPS) ** -1.5 * drstd  # answer: d (v + eps)^-1/2
dxc = dxhat * rstd.data + 2 * xc.data * dvar / Hd  # answer: two uses: xhat = xc rstd, var = mean(xc^2)
dmean = -dxc.sum(axis=-1, keepdims=True)  # answer: xc = h - mean
dh = dxc + np.broadcast_to(dmean, (N, Hd)) / Hd  # answer: two uses of h: xc and mean
demb = dh @ W1.data  # answer: (N, Hd) @ (Hd, C)
dW1 = dh.T @ emb.data  # answer: (Hd, N) @ (N, C)
db1 = dh.sum(axis=0)  # answer: b1 broadcast over the rows
dwte = np.zeros((V, C)); np.add.at(dwte, ids, demb)  # answer: a repeated id adds up

grads = {"wte": dwte, "emb": demb, "W1": dW1, "b1": db1, "h": dh, "mean": dmean, "xc": dxc, "var": dvar,
         "rstd": drstd, "xhat": dxhat, "g": dg, "beta": dbeta, "hn": dhn, "u": du, "t": dt, "act": dact,
         "W2": dW2, "b2": db2, "logits": dlogits, "lmax": dlmax, "shifted": dshifted, "e": de, "se": dse,
         "lse": dlse, "logp": dlogp, "picked": dpicked}

# %% [markdown]
# Run this file (`python 2_mlp_atoms.py`) or this cell to see the table; the
# same as `python -m tinytensor exercise 2`.

# %%
if __name__ == "__main__":
    from tinytensor.exercise import report

    report(forward, loss, grads)
