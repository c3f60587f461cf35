# %% [markdown]
# # Exercise 6: grouped-query attention and RoPE
#
# Llama's attention ([rope.md](../rope.md), [attention.md](../attention.md)):
# $H$ query heads read $H_{kv} = H / G$ key/value heads (query head $h$ reads
# head $h // G$), and RoPE rotates each pair $(x_i, x_{i + D/2})$ of q and k
# by a position's angle before the scores. Two rules carry the whole
# backward: a head read by $G$ query heads gets the **sum** of their $G$
# gradients (a repeat in the forward is a sum in the backward), and the
# backward of a rotation is the rotation by the opposite angle.
#
# Check with `python -m tinytensor exercise 6`.

# %%
import math

import numpy as np

import tinytensor as tt
import tinytensor.functional as F

rng = np.random.default_rng(6)
H, HKV, T, D = 4, 2, 5, 6
G, HALF, SCALE = H // HKV, D // 2, 1 / math.sqrt(D)
heads = np.arange(H) // G                                  # (H,) the kv head each query head reads
angles = np.arange(T)[:, None] * 10000.0 ** (-np.arange(HALF) / HALF)  # (T, D/2)
cos, sin = np.cos(angles), np.sin(angles)                  # (T, D/2) each
future = np.triu(np.ones((T, T), dtype=bool), k=1)         # (T, T)
do_given = rng.normal(size=(H, T, D))


def t64(shape):
    return tt.tensor(rng.normal(0.0, 1.0, shape), requires_grad=True, dtype="float64")


q, k, v = t64((H, T, D)), t64((HKV, T, D)), t64((HKV, T, D))

# %%
q1, q2 = q[..., :HALF], q[..., HALF:]      # (H, T, D/2) each
qa = q1 * cos - q2 * sin                   # (H, T, D/2)
qb = q2 * cos + q1 * sin                   # (H, T, D/2)
qr = tt.concatenate([qa, qb], axis=-1)     # (H, T, D)   q rotated
k1, k2 = k[..., :HALF], k[..., HALF:]      # (Hkv, T, D/2) each
ka = k1 * cos - k2 * sin                   # (Hkv, T, D/2)
kb = k2 * cos + k1 * sin                   # (Hkv, T, D/2)
kr = tt.concatenate([ka, kb], axis=-1)     # (Hkv, T, D)  k rotated
kg = kr[heads]                             # (H, T, D)    kv head h // G for query head h
vg = v[heads]                              # (H, T, D)
s = (qr @ kg.swapaxes(-1, -2)) * SCALE     # (H, T, T)
sm = s.masked_fill(future, -math.inf)      # (H, T, T)
p = F.softmax(sm, axis=-1)                 # (H, T, T)
o = p @ vg                                 # (H, T, D)
loss = (o * do_given).sum()
forward = {"q": q, "k": k, "v": v, "q1": q1, "q2": q2, "qa": qa, "qb": qb, "qr": qr, "k1": k1, "k2": k2,
           "ka": ka, "kb": kb, "kr": kr, "kg": kg, "vg": vg, "s": s, "sm": sm, "p": p, "o": o}

# %%
do = do_given  # answer
dvg = p.data.swapaxes(-1, -2) @ do  # answer: (H, T, T) @ (H, T, D)
dp = do @ vg.data.swapaxes(-1, -2)  # answer
dsm = p.data * (dp - (do * o.data).sum(-1, keepdims=True))  # answer: the rowsum identity
ds = np.where(future, 0.0, dsm)  # answer
dqr = ds @ kg.data * SCALE  # answer
dkg = ds.swapaxes(-1, -2) @ qr.data * SCALE  # answer
dv = dvg.reshape(HKV, G, T, D).sum(1)  # answer: a repeat in the forward is a sum in the backward
dkr = dkg.reshape(HKV, G, T, D).sum(1)  # answer: heads h // G = j are the G heads G j .. G j + G - 1
dka, dkb = dkr[..., :HALF], dkr[..., HALF:]  # answer: a concatenation's backward splits
dk1 = dka * cos + dkb * sin  # answer: the opposite rotation
dk2 = -dka * sin + dkb * cos  # answer
dk = np.concatenate([dk1, dk2], axis=-1)  # answer
dqa, dqb = dqr[..., :HALF], dqr[..., HALF:]  # answer
dq1 = dqa * cos + dqb * sin  # answer
dq2 = -dqa * sin + dqb * cos  # answer
dq = np.concatenate([dq1, dq2], axis=-1)  # answer
grads = {"q": dq, "k": dk, "v": dv, "q1": dq1, "q2": dq2, "qa": dqa, "qb": dqb, "qr": dqr, "k1": dk1,
         "k2": dk2, "ka": dka, "kb": dkb, "kr": dkr, "kg": dkg, "vg": dvg, "s": ds, "sm": dsm, "p": dp, "o": do}

# %% [markdown]
# Run this file (`python 6_gqa_rope.py`) or this cell to see the table; the
# same as `python -m tinytensor exercise 6`.

# %%
if __name__ == "__main__":
    from tinytensor.exercise import report

    report(forward, loss, grads)
