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
dpicked = ...  # TODO: loss = -mean(picked)
dlogp = ...  # TODO: the pick's scatter
dlse = ...  # TODO: broadcast in the forward, sum in the backward
dse = ...  # TODO: d log s = 1/s
de = ...  # TODO: sum in the forward, broadcast in the backward
dshifted = ...  # TODO: used twice: in logp and in exp
dlmax = ...  # TODO: ~0
dlogits = ...  # TODO: two uses; the max's goes to the arg-max
dact = ...  # TODO: (N, V) @ (V, Hd)
dW2 = ...  # TODO: (V, N) @ (N, Hd)
db2 = ...  # TODO: b2 broadcast over the rows
dt = ...  # TODO: act = 0.5 hn (1 + t)
du = ...  # TODO: tanh' = 1 - tanh^2
dhn = ...  # TODO: two uses of hn
dxhat = ...  # TODO: hn = xhat g + beta
dg = ...  # TODO: g broadcast over the rows
dbeta = ...  # TODO: beta broadcast over the rows
drstd = ...  # TODO: rstd broadcast over the row
dvar = ...  # TODO: d (v + eps)^-1/2
dxc = ...  # TODO: two uses: xhat = xc rstd, var = mean(xc^2)
dmean = ...  # TODO: xc = h - mean
dh = ...  # TODO: two uses of h: xc and mean
demb = ...  # TODO: (N, Hd) @ (Hd, C)
dW1 = ...  # TODO: (Hd, N) @ (N, C)
db1 = ...  # TODO: b1 broadcast over the rows
dwte = ...  # TODO: a repeated id adds up

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
