# %% [markdown]
# # Exercise 3: cross-entropy's gradient in one expression
#
# Exercise 2 walked cross-entropy back through five lines. Do it in one:
# with $p = \mathrm{softmax}(z)$ and $y$ the one-hot target, the mean over
# the $M$ kept rows gives $dz = (p - y) / M$ for a kept row and 0 for a row
# whose target is `ignore_index` ([softmax.md](../softmax.md)). Then the
# same through the linear layer that made the logits.
#
# Check with `python -m tinytensor exercise 3`.

# %%
import numpy as np

import tinytensor as tt
import tinytensor.functional as F

rng = np.random.default_rng(3)
N, C, V = 7, 5, 9
targets = rng.integers(0, V, N)            # (N,)
targets[[2, 5]] = -100                     # two rows ignored: they count neither in the loss nor in M
x = tt.tensor(rng.normal(0.0, 1.0, (N, C)), requires_grad=True, dtype="float64")  # (N, C)
W = tt.tensor(rng.normal(0.0, 0.7, (V, C)), requires_grad=True, dtype="float64")  # (V, C)

# %%
logits = x @ W.T                           # (N, V)
loss = F.cross_entropy(logits, targets)    # ()  mean over the kept rows
forward = {"x": x, "W": W, "logits": logits}

# %% [markdown]
# `p` and the one-hot `y` are yours to make, in NumPy, from `logits.data`.

# %%
kept = targets != -100                     # (N,)
z = logits.data
e = ...  # TODO: the max only for stability
p = ...  # TODO: softmax (N, V)
y = ...  # TODO: one-hot rows (N, V)
dlogits = ...  # TODO: one expression
dx = ...  # TODO
dW = ...  # TODO
grads = {"x": dx, "W": dW, "logits": dlogits}

# %% [markdown]
# Run this file (`python 3_cross_entropy.py`) or this cell to see the table; the
# same as `python -m tinytensor exercise 3`.

# %%
if __name__ == "__main__":
    from tinytensor.exercise import report

    report(forward, loss, grads)
