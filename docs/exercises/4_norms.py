# %% [markdown]
# # Exercise 4: layer norm's gradient in one expression, then RMS norm's
#
# Exercise 2 took layer norm back through mean, variance, rstd and x-hat.
# Now in one expression per array ([normalization.md](../normalization.md)):
# with $r$ the rstd and $g = dy \odot w$,
#
# $$dx = r\,\big(g - \overline{g} - \hat x\,\overline{g \odot \hat x}\big)$$
#
# (a bar is the mean over the row). Then RMS norm, which has no mean to
# subtract: $y = x\, r \odot w$ with $r = 1/\sqrt{\overline{x^2} + \epsilon}$.
# Each norm here gets its own upstream gradient through a fixed random
# weighting of its output, so that `dy` is not all ones.
#
# Check with `python -m tinytensor exercise 4`.

# %%
import numpy as np

import tinytensor as tt
import tinytensor.functional as F

rng = np.random.default_rng(4)
N, C, EPS = 6, 8, 1e-5


def t64(a):
    return tt.tensor(a, requires_grad=True, dtype="float64")


x, w, b = t64(rng.normal(0.5, 1.5, (N, C))), t64(rng.normal(1.0, 0.5, C)), t64(rng.normal(0.0, 0.5, C))
x2, w2 = t64(rng.normal(0.0, 2.0, (N, C))), t64(rng.normal(1.0, 0.5, C))
dy_given, dz_given = rng.normal(size=(N, C)), rng.normal(size=(N, C))   # the upstream gradients

# %%
y = F.layer_norm(x, w, b, eps=EPS)         # (N, C)
z = F.rms_norm(x2, w2, eps=EPS)            # (N, C)
loss = (y * dy_given).sum() + (z * dz_given).sum()  # so that dy = dy_given, dz = dz_given
forward = {"x": x, "w": w, "b": b, "y": y, "x2": x2, "w2": w2, "z": z}

# %% [markdown]
# Recompute what the backward needs (rstd, x-hat) in NumPy, then one
# expression per gradient.

# %%
xd = x.data
rstd = 1 / np.sqrt(xd.var(-1, keepdims=True) + EPS)                       # (N, 1)
xhat = (xd - xd.mean(-1, keepdims=True)) * rstd                           # (N, C)
dy = ...  # TODO
gw = ...  # TODO: (N, C)
dx = ...  # TODO
dw = ...  # TODO
db = ...  # TODO
r2 = 1 / np.sqrt((x2.data ** 2).mean(-1, keepdims=True) + EPS)            # (N, 1)
xhat2 = x2.data * r2                                                      # (N, C)
dz = ...  # TODO
gz = ...  # TODO
dx2 = ...  # TODO: no mean term
dw2 = ...  # TODO
grads = {"x": dx, "w": dw, "b": db, "y": dy, "x2": dx2, "w2": dw2, "z": dz}

# %% [markdown]
# Run this file (`python 4_norms.py`) or this cell to see the table; the
# same as `python -m tinytensor exercise 4`.

# %%
if __name__ == "__main__":
    from tinytensor.exercise import report

    report(forward, loss, grads)
