# %% [markdown]
# # Exercise 9: the DPO loss, into both responses' logits
#
# A batch of $B$ preference pairs ([dpo.md](../dpo.md)): the policy's logits
# for the chosen and the rejected response, each $(B, T, V)$; a response's
# log-probability is the sum of its tokens' log-softmax, the prompt and the
# padding masked; $\Delta = (\ell^c - \ell^c_{ref}) - (\ell^r - \ell^r_{ref})$
# against the reference's sums (constants), $z = \beta\Delta$, and the loss is
# the mean of $-\log\sigma(z)$, written stably as a log-sum-exp of $0$ and
# $-z$ shifted by its max, as exercise 2 wrote cross-entropy's.
#
# First the gradient of every line, from the loss back. Then, in one
# expression per response, the whole gradient into the logits:
#
# $$dx_{b,t} = \mp\frac{\beta\,\sigma(-z_b)}{B}\, m_{b,t}\,\big(\mathrm{onehot}(y_{b,t}) - \mathrm{softmax}(x_{b,t})\big)$$
#
# ($-$ for the chosen response, $+$ for the rejected one): rows named
# `x_c (closed form)` check it against the same gradient as `x_c`.
#
# Check with `python -m tinytensor exercise 9`.

# %%
import numpy as np

import tinytensor as tt
import tinytensor.functional as F

rng = np.random.default_rng(9)
B, T, V, BETA = 4, 7, 6, 0.5
IGNORE = -100                              # a target that is not a response token


def response_targets():
    """(B, T) next tokens: a prompt (masked), the response, then padding (masked)."""
    y = rng.integers(0, V, (B, T))
    for b in range(B):
        start = rng.integers(1, 3)                  # the prompt's targets
        stop = rng.integers(start + 1, T + 1)       # at least one response token
        y[b, :start] = IGNORE
        y[b, stop:] = IGNORE
    return y


def logits():
    return tt.tensor(rng.normal(0.0, 1.5, (B, T, V)), requires_grad=True, dtype="float64")


y_c, y_r = response_targets(), response_targets()                  # (B, T) each
m_c, m_r = (y_c != IGNORE).astype(np.float64), (y_r != IGNORE).astype(np.float64)  # (B, T) response masks
pick_c_at, pick_r_at = np.where(y_c == IGNORE, 0, y_c), np.where(y_r == IGNORE, 0, y_r)  # any id where masked
x_c, x_r = logits(), logits()              # (B, T, V) the policy's logits
bi, ti = np.arange(B)[:, None], np.arange(T)[None, :]

# %%
logp_c = F.log_softmax(x_c)                # (B, T, V)
pick_c = logp_c[bi, ti, pick_c_at]         # (B, T)  log p of each target token
masked_c = pick_c * m_c                    # (B, T)  prompt and padding to 0
ell_c = masked_c.sum(axis=-1)              # (B,)    log pi(chosen | prompt)
logp_r = F.log_softmax(x_r)                # (B, T, V)
pick_r = logp_r[bi, ti, pick_r_at]         # (B, T)
masked_r = pick_r * m_r                    # (B, T)
ell_r = masked_r.sum(axis=-1)              # (B,)    log pi(rejected | prompt)
ref_c = ell_c.data + rng.normal(0.0, 2.0, B)  # (B,)  the reference's sums, a little off the policy's:
ref_r = ell_r.data + rng.normal(0.0, 2.0, B)  # (B,)  NumPy arrays, constants (no gradient)
delta = (ell_c - ref_c) - (ell_r - ref_r)  # (B,)
z = BETA * delta                           # (B,)    the reward margin
shift = (-z).relu()                        # (B,)    max(0, -z)
e0 = (-shift).exp()                        # (B,)    e^(0 - shift)
e1 = (-z - shift).exp()                    # (B,)    e^(-z - shift); one of e0, e1 is 1, neither overflows
se = e0 + e1                               # (B,)
lse = se.log()                             # (B,)
per = shift + lse                          # (B,)    log(1 + e^-z) = -log sigmoid(z)
loss = per.mean()                          # ()

forward = {"x_c": x_c, "logp_c": logp_c, "pick_c": pick_c, "masked_c": masked_c, "ell_c": ell_c,
           "x_r": x_r, "logp_r": logp_r, "pick_r": pick_r, "masked_r": masked_r, "ell_r": ell_r,
           "delta": delta, "z": z, "shift": shift, "e0": e0, "e1": e1, "se": se, "lse": lse, "per": per}

# %% [markdown]
# Your backward, one line per forward line, from the last. `shift` is used
# three times and `z` twice: add the gradients of every use. `shift`'s
# gradient is 0 in exact arithmetic (a shift of a log-sum-exp changes
# nothing), as `lmax`'s was in exercise 2.

# %%
dper = ...  # TODO: loss = mean(per)
dlse = ...  # TODO
dse = ...  # TODO: d log s = 1/s
de0 = ...  # TODO
de1 = ...  # TODO
dshift = ...  # TODO: three uses: per, e0, e1; ~0
dz = ...  # TODO: two uses: e1, and shift = relu(-z)
ddelta = ...  # TODO
dell_c = ...  # TODO
dell_r = ...  # TODO: the rejected response enters with a minus
dmasked_c = ...  # TODO: a sum is a broadcast back
dpick_c = ...  # TODO: masked positions get nothing
dlogp_c = ...  # TODO: the pick's scatter
dx_c = ...  # TODO: log-softmax's backward
dmasked_r = ...  # TODO
dpick_r = ...  # TODO
dlogp_r = ...  # TODO
dx_r = ...  # TODO

# %% [markdown]
# The whole gradient into the logits, in one expression per response, from
# the forward's values only: $\sigma(-z)$ (the forward has it stably:
# $e_1 / (e_0 + e_1)$), the softmax and the one-hot targets.

# %%
sig = ...  # TODO: sigma(-z), (B,)
w = ...  # TODO: each pair's weight, (B,)
onehot_c, onehot_r = ..., ...  # TODO: (B, T, V) each
dx_c_closed = ...  # TODO: pushed up
dx_r_closed = ...  # TODO: pushed down

grads = {"x_c": dx_c, "logp_c": dlogp_c, "pick_c": dpick_c, "masked_c": dmasked_c, "ell_c": dell_c,
         "x_r": dx_r, "logp_r": dlogp_r, "pick_r": dpick_r, "masked_r": dmasked_r, "ell_r": dell_r,
         "delta": ddelta, "z": dz, "shift": dshift, "e0": de0, "e1": de1, "se": dse, "lse": dlse,
         "per": dper, "x_c (closed form)": dx_c_closed, "x_r (closed form)": dx_r_closed}

# %% [markdown]
# Run this file (`python 9_dpo.py`) or this cell to see the table; the
# same as `python -m tinytensor exercise 9`.

# %%
if __name__ == "__main__":
    from tinytensor.exercise import report

    report(forward, loss, grads)
