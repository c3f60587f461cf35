# %% [markdown]
# # Exercise 5: attention, first as loops, then as matrices
#
# One head of causal attention with dropout on the probabilities
# ([attention.md](../attention.md)): scores $S = q k^\top s$ with
# $s = 1/\sqrt{D}$, the future masked to $-\infty$, $P = \mathrm{softmax}(S)$
# row by row, dropout $\tilde P = P \odot \text{keep} / (1 - p)$, and
# $O = \tilde P v$.
#
# First the backward as loops over queries $i$ and keys $j \le i$, every index
# concrete (llm.c writes it so): a query row gets gradient only from the keys
# it saw. Then the same in matrix form, with the rowsum identity
# $\sum_j dP_{ij} P_{ij} = dO_i \cdot O_i$ (true here too: $dP \odot P =
# d\tilde P \odot \tilde P$ elementwise).
#
# Check with `python -m tinytensor exercise 5`: rows named `q (loop)` check
# your loops against the same gradient as `q`.

# %%
import math

import numpy as np

import tinytensor as tt
import tinytensor.functional as F

rng = np.random.default_rng(5)
T, D, P_DROP = 6, 4, 0.25
SCALE = 1 / math.sqrt(D)
future = np.triu(np.ones((T, T), dtype=bool), k=1)       # (T, T) key j > query i
keep = rng.random((T, T)) >= P_DROP                        # (T, T) the dropout mask, fixed
do_given = rng.normal(size=(T, D))                         # the upstream gradient of O


def t64(shape):
    return tt.tensor(rng.normal(0.0, 1.0, shape), requires_grad=True, dtype="float64")


q, k, v = t64((T, D)), t64((T, D)), t64((T, D))

# %%
s = (q @ k.T) * SCALE                      # (T, T)
sm = s.masked_fill(future, -math.inf)      # (T, T)
p = F.softmax(sm, axis=-1)                 # (T, T)
pd = p * (keep / (1 - P_DROP))             # (T, T)
o = pd @ v                                 # (T, D)
loss = (o * do_given).sum()                # so that dO = do_given
forward = {"q": q, "k": k, "v": v, "s": s, "sm": sm, "p": p, "pd": pd, "o": o}

# %% [markdown]
# The loops: for each query $i$, each key $j \le i$. Forward, per entry:
# $S_{ij} = s\, q_i \cdot k_j$, $O_i = \sum_j \tilde P_{ij} v_j$.


# %%
def attention_backward_loops(q, k, v, p, do):
    """dq, dk, dv (each (T, D)) with a loop over queries and keys."""
    # answer { return ..., ..., ...
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for i in range(T):
        dpd = np.zeros(T)
        for j in range(i + 1):                             # the keys query i saw
            dpd[j] = do[i] @ v[j]                          # O_i = sum_j Pd_ij v_j
            dv[j] += p[i, j] * keep[i, j] / (1 - P_DROP) * do[i]
        dp = dpd * keep[i] / (1 - P_DROP)                  # Pd_ij = P_ij keep_ij / (1 - p)
        rowsum = sum(dp[j] * p[i, j] for j in range(i + 1))
        for j in range(i + 1):
            ds = p[i, j] * (dp[j] - rowsum)                # softmax's backward, one entry
            dq[i] += ds * SCALE * k[j]                     # S_ij = scale q_i . k_j
            dk[j] += ds * SCALE * q[i]
    return dq, dk, dv
    # answer }


dq_loop, dk_loop, dv_loop = attention_backward_loops(q.data, k.data, v.data, p.data, do_given)

# %% [markdown]
# The matrix form, one line per forward line.

# %%
do = do_given  # answer
dpd = do @ v.data.T  # answer: (T, D) @ (D, T)
dv = pd.data.T @ do  # answer: (T, T) @ (T, D)
dp = dpd * keep / (1 - P_DROP)  # answer: dropout's backward uses the same mask
rowsum = (do * o.data).sum(-1, keepdims=True)  # answer: (T, 1) the rowsum identity
dsm = p.data * (dp - rowsum)  # answer: softmax's backward
ds = np.where(future, 0.0, dsm)  # answer: masked scores are constants
dq = ds @ k.data * SCALE  # answer
dk = ds.T @ q.data * SCALE  # answer
grads = {"q": dq, "k": dk, "v": dv, "s": ds, "sm": dsm, "p": dp, "pd": dpd, "o": do,
         "q (loop)": dq_loop, "k (loop)": dk_loop, "v (loop)": dv_loop}

# %% [markdown]
# Run this file (`python 5_attention.py`) or this cell to see the table; the
# same as `python -m tinytensor exercise 5`.

# %%
if __name__ == "__main__":
    from tinytensor.exercise import report

    report(forward, loss, grads)
