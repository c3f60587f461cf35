"""Optimizers (SGD, AdamW), gradient clipping and a warmup + cosine learning-rate schedule.

An optimizer holds `param_groups`: a list of dicts, each with "params" (the
tensors) and its own hyperparameters, so biases and norm weights can skip
weight decay. Training scripts set the learning rate every step with

    for group in opt.param_groups:
        group["lr"] = cosine_schedule(step, max_lr, min_lr, warmup_steps, decay_steps)

Updates happen in place on the parameters' arrays (and on the optimizer's own
buffers) with `out=` ufuncs and one shared scratch array, so a step allocates
nothing proportional to the model once the first step has run.

`state_dict()` layout, made to be saved as safetensors + JSON:

    {
      "arrays":  {"0.exp_avg": array, "0.exp_avg_sq": array, "1.exp_avg": ...},   # safetensors
      "scalars": {"0.step": 12, "1.step": 12},                                      # JSON
      "param_groups": [{"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8,
                        "weight_decay": 0.1, "params": [0, 1]}, ...],               # JSON
    }

The number before the dot is the parameter's position counting through all
groups in order (the order they were given in); parameters that have not been
updated yet have no entries.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

from .backend import get_array_module, to_device
from .gradbuffer import FlatStorage, slot, unbind
from .profiler import region
from .tensor import Tensor, _data

if TYPE_CHECKING:
    from .nn import Module


def _check_non_negative(optimizer: str, **options: float) -> None:
    """Each option must be a finite number >= 0; the error names the option and the value given."""
    for name, value in options.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{optimizer}: {name} must be a finite number >= 0, got {value!r}")


class Optimizer:
    """Base class: parameter groups, per-parameter state, step, state dicts.

    A subclass names its per-parameter state (`array_state`, `scalar_state`),
    creates it in `_new_state` and applies one update in `_update`.

    Flat storage (gradbuffer.py): when all parameters share one device and
    dtype, their values, gradients (`flat_grad`, whose slots backward writes
    into) and each state array live in one contiguous array each. A step then updates a whole run
    of parameters (consecutive ones with a gradient and the same step count)
    with a few vectorised passes instead of a few passes per parameter; each
    pass works through the run in cache-sized chunks. The arithmetic is the
    same elementwise, so the result is identical to updating one parameter at a
    time. A parameter whose `.data` was replaced since (by `Module.to`, say) is
    moved back in at the next step.
    """

    array_state: tuple[str, ...] = ()
    scalar_state: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        # id(parameter) -> its buffers and counters, created on its first update
        self.state: dict[int, dict[str, Any]] = {}
        # (array module, dtype) -> 1-D work array, big enough for the largest update
        self._work: dict[tuple[str, Any], Any] = {}
        self._flat: FlatStorage | None = None
        items = [params] if isinstance(params, Tensor) else list(params)
        groups = items if items and isinstance(items[0], dict) else [{"params": items}]
        for group in groups:
            self._add_group(group)
        if not self._params():
            raise ValueError("optimizer got an empty parameter list")
        self._bind()  # once for all the groups: each build copies every parameter in

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add {"params": [...], option: value, ...}; options left out take the defaults."""
        self._add_group(group)
        self._bind()

    def _add_group(self, group: dict[str, Any]) -> None:
        if "params" not in group:
            raise ValueError("a parameter group needs a 'params' entry")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} in a parameter group of {type(self).__name__}; "
                f"known: {sorted(self.defaults)}"
            )
        _check_non_negative(type(self).__name__, **{k: v for k, v in group.items()
                                                     if k in ("lr", "eps", "momentum", "weight_decay")})
        params = [group["params"]] if isinstance(group["params"], Tensor) else list(group["params"])
        for p in params:
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"optimizers update tensors that require grad, got {type(p).__name__}")
        known = {id(p) for p in self._params()}
        if any(id(p) in known for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter appears more than once in the optimizer's parameter groups")
        self.param_groups.append({**self.defaults, **group, "params": params})

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _group_indices(self) -> list[list[int]]:
        """Each group's parameter positions, counting through all groups in order (the state dict's keys)."""
        indices, start = [], 0
        for group in self.param_groups:
            indices.append(list(range(start, start + len(group["params"]))))
            start += len(group["params"])
        return indices

    @property
    def flat_grad(self) -> Any:
        """Every parameter's gradient slot, as one contiguous 1-D array in parameter
        order (groups in order). Backward writes each parameter's gradient into its
        slot, and `p.grad` is a view of it, so the whole array can be reduced in
        place (an MPI Allreduce) between backward and `step()`. The slot of a
        parameter whose grad is None holds stale values: call
        `zero_grad(set_to_none=False)` before backward to keep every slot defined.
        None when the parameters do not share one device and dtype."""
        self._rebind_if_moved()
        return None if self._flat is None else self._flat.grad

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Set every parameter's grad to None; with set_to_none=False, to zeros
        instead (one fill of `flat_grad`, then each grad is its slot)."""
        if set_to_none:
            for p in self._params():
                p.grad = None
            return
        self._rebind_if_moved()
        if self._flat is not None:
            self._flat.grad.fill(0)
            for p in self._params():
                p.grad = slot(p)
        else:
            for p in self._params():
                p.grad = get_array_module(p.data).zeros_like(p.data)

    def step(self) -> None:
        """Update every parameter that has a gradient; those whose grad is None
        (unused by this loss) are left alone, state included."""
        with region(f"{type(self).__name__}.step"):
            self._rebind_if_moved()
            for group in self.param_groups:
                run: list[Tensor] = []
                for p in group["params"]:
                    if p.grad is None:
                        self._update_run(run, group)
                        run = []
                        continue
                    if id(p) not in self.state:
                        self.state[id(p)] = self._new_state(p.data, group)
                        if self._flat is not None:
                            self._flat.adopt(p, self.state[id(p)])
                    if run and self.state[id(run[0])].get("step") != self.state[id(p)].get("step"):
                        self._update_run(run, group)
                        run = []
                    run.append(p)
                self._update_run(run, group)

    def _update_run(self, run: list[Tensor], group: dict[str, Any]) -> None:
        """One update of consecutive parameters that all have a gradient and the same step count."""
        if not run:
            return
        for p in run:
            state = self.state[id(p)]
            if "step" in state:
                state["step"] += 1
        step = self.state[id(run[0])].get("step", 0)
        if self._flat is None:
            for p in run:
                arrays = {name: v for name, v in self.state[id(p)].items() if name in self.array_state}
                scratch = self._scratch(p.data, p.size).reshape(p.shape)
                self._update(p.data, p.grad, arrays, step, group, scratch)
            return
        flat = self._flat
        for p in run:
            if p.grad is not slot(p):  # a gradient set by hand, not written by backward
                slot(p)[...] = to_device(p.grad, flat.device)
        start, end = flat.span(run[0])[0], flat.span(run[-1])[1]
        names = [name for name in self.array_state if name in self.state[id(run[0])]]
        scratch = self._scratch(flat.data, min(_CHUNK, end - start))
        for lo in range(start, end, _CHUNK):
            hi = min(lo + _CHUNK, end)
            arrays = {name: flat.state[name][lo:hi] for name in names}
            self._update(flat.data[lo:hi], flat.grad[lo:hi], arrays, step, group, scratch[:hi - lo])

    def _new_state(self, p: Any, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _update(self, p: Any, g: Any, state: dict[str, Any], step: int, group: dict[str, Any], s: Any) -> None:
        """Update array `p` in place from gradient `g`, with the state arrays `state`
        (shaped like p) at step count `step` (already counting this update);
        `s` is scratch shaped like p. p may hold several parameters side by side."""
        raise NotImplementedError

    def _scratch(self, like: Any, size: int) -> Any:
        """A 1-D work array of `size` elements on like's device and of its dtype;
        updates run one after another, so they can all share one."""
        xp = get_array_module(like)
        key = (xp.__name__, like.dtype)
        buf = self._work.get(key)
        if buf is None or buf.size < size:
            buf = self._work[key] = xp.empty(size, dtype=like.dtype)
        return buf[:size]

    def _bind(self) -> None:
        """(Re)build the flat storage from the parameters' current arrays, grads and state."""
        params = self._params()
        for p in params:
            unbind(p)
        first = params[0].data if params else None
        same = all(type(p.data) is type(first) and p.dtype == first.dtype for p in params)
        self._flat = FlatStorage(params, self.array_state, self.state) if params and same else None

    def _rebind_if_moved(self) -> None:
        if self._flat is not None and not self._flat.holds(self._params()):
            self._bind()

    # ---- checkpoints -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as arrays (copies) and JSON-able values; see the module docstring."""
        arrays: dict[str, Any] = {}
        scalars: dict[str, int] = {}
        for i, p in enumerate(self._params()):
            for name, value in self.state.get(id(p), {}).items():
                if name in self.array_state:
                    arrays[f"{i}.{name}"] = value.copy()
                else:
                    scalars[f"{i}.{name}"] = value
        groups = []
        for group, indices in zip(self.param_groups, self._group_indices()):
            options = {k: list(v) if isinstance(v, tuple) else v for k, v in group.items() if k != "params"}
            options["params"] = indices
            groups.append(options)
        return {"arrays": arrays, "scalars": scalars, "param_groups": groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore hyperparameters and per-parameter state saved by `state_dict()`.

        The groups must hold the same number of parameters, in the same order,
        as when it was saved. Every mismatch is reported in one error before
        anything changes. Arrays are copied to each parameter's device and dtype.
        """
        lacking = [k for k in ("arrays", "scalars", "param_groups") if k not in state]
        if lacking:
            raise ValueError(f"not an optimizer state dict: it lacks {lacking}")
        params = self._params()
        problems = []
        saved_groups = state["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            problems.append(
                f"the checkpoint has {len(saved_groups)} parameter groups, this optimizer has {len(self.param_groups)}"
            )
        for gi, (saved, own_indices) in enumerate(zip(saved_groups, self._group_indices())):
            if list(saved.get("params", [])) != own_indices:
                problems.append(
                    f"group {gi}: the checkpoint holds parameters {saved.get('params')}, "
                    f"this optimizer's group holds {own_indices}"
                )
            unknown = set(saved) - set(self.defaults) - {"params"}
            if unknown:
                problems.append(f"group {gi}: unknown options {sorted(unknown)} for {type(self).__name__}")

        per_param: dict[int, dict[str, Any]] = {}
        for kind, names in (("arrays", self.array_state), ("scalars", self.scalar_state)):
            for key, value in state[kind].items():
                index, _, name = key.partition(".")
                if not index.isdigit() or int(index) >= len(params) or name not in names:
                    problems.append(f"unexpected {kind} entry {key!r} (this optimizer has {len(params)} "
                                    f"parameters and state {list(names)})")
                    continue
                i = int(index)
                if kind == "arrays":
                    value = _data(value)
                    if tuple(value.shape) != params[i].shape:
                        problems.append(f"{key}: the checkpoint has shape {tuple(value.shape)}, "
                                        f"parameter {i} has shape {params[i].shape}")
                per_param.setdefault(i, {})[name] = value
        for i, entries in sorted(per_param.items()):
            missing = [n for n in self.array_state + self.scalar_state if n not in entries]
            if missing:
                problems.append(f"parameter {i} has state but lacks {missing}")
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict failed:\n  " + "\n  ".join(problems))

        for saved, own in zip(saved_groups, self.param_groups):
            own.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, entries in per_param.items():
            p = params[i]
            self.state[id(p)] = {
                # astype copies, so stepping never writes into the caller's arrays
                name: to_device(v, p.device).astype(p.dtype) if name in self.array_state else int(v)
                for name, v in entries.items()
            }
        self._bind()


# a step's vectorised passes work through a run of parameters this many elements
# at a time (1 MiB of float32 per array), so a chunk's dozen passes stay in cache
# and the work array stays small: on a 29M-parameter model this halves the step
# against whole-run passes; smaller chunks pay more in per-call overhead
_CHUNK = 1 << 18


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, as PyTorch defines it:

        d = g + weight_decay * p              (L2 penalty, added to the gradient)
        buf = momentum * buf + d              (buf starts at 0, so first buf = d)
        d = d + momentum * buf  if nesterov   else  d = buf
        p -= lr * d
    """

    array_state = ("momentum_buffer",)

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        _check_non_negative("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    def _new_state(self, p: Any, group: dict[str, Any]) -> dict[str, Any]:
        return {"momentum_buffer": get_array_module(p).zeros_like(p)} if group["momentum"] else {}

    def _update(self, p: Any, g: Any, state: dict[str, Any], step: int, group: dict[str, Any], s: Any) -> None:
        xp = get_array_module(p)
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        # the direction d is built in the scratch so p.grad stays as backward left it
        d = s
        if wd:
            xp.multiply(p, wd, out=d)
            d += g
        else:
            xp.copyto(d, g)
        if not mu:
            d *= lr
            p -= d
            return
        buf = state["momentum_buffer"]
        buf *= mu
        buf += d
        if group["nesterov"]:
            # p -= lr * (d + mu * buf), in two passes to need no second buffer
            d *= lr
            p -= d
            xp.multiply(buf, lr * mu, out=d)
        else:
            xp.multiply(buf, lr, out=d)
        p -= d


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as PyTorch computes it.
    With t the parameter's step count (from 1):

        p -= lr * weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        p -= lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
    """

    array_state = ("exp_avg", "exp_avg_sq")
    scalar_state = ("step",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        _check_non_negative("AdamW", lr=lr, eps=eps, weight_decay=weight_decay)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamW betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _new_state(self, p: Any, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_array_module(p)
        return {"step": 0, "exp_avg": xp.zeros_like(p), "exp_avg_sq": xp.zeros_like(p)}

    def _update(self, p: Any, g: Any, state: dict[str, Any], step: int, group: dict[str, Any], s: Any) -> None:
        xp = get_array_module(p)
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        b1, b2 = group["betas"]
        t = step
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if wd:
            # decoupled: shrink the weights directly rather than through the
            # gradient, where Adam's per-element scaling would distort it
            p *= 1.0 - lr * wd
        xp.multiply(g, 1.0 - b1, out=s)
        m *= b1
        m += s
        xp.multiply(g, g, out=s)
        s *= 1.0 - b2
        v *= b2
        v += s
        # m and v start at 0 and so underestimate early on; the bias corrections
        # 1 - beta**t undo that, folded into scalars to save array passes
        xp.sqrt(v, out=s)
        s *= 1.0 / math.sqrt(1.0 - b2**t)
        s += eps
        xp.divide(m, s, out=s)
        s *= lr / (1.0 - b1**t)
        p -= s


def clip_grad_norm_(params: Iterable[Tensor], max_norm: float) -> float:
    """Scale all gradients together, in place, so their global L2 norm is at most
    `max_norm`; return the norm they had before (parameters without grad are
    skipped). A non-finite return value means the step should be skipped."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    params = [params] if isinstance(params, Tensor) else params
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(_sum_of_squares(gs) for gs in _by_array_module(grads)))
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for g in grads:
            g *= scale
    return total


def _by_array_module(arrays: list[Any]) -> list[list[Any]]:
    """The arrays grouped by the module that made them (NumPy, CuPy), order kept within a group."""
    groups: dict[str, list[Any]] = {}
    for a in arrays:
        groups.setdefault(get_array_module(a).__name__, []).append(a)
    return list(groups.values())


def _sum_of_squares(arrays: list[Any]) -> float:
    """sum over the arrays of sum(a * a), for arrays on one device. Each array's part
    stays on the device and the parts are added there in float64 (so many float32
    parts lose no precision): one transfer to the host for all of them, not a
    synchronising float() per parameter."""
    xp = get_array_module(arrays[0])
    parts = xp.stack([xp.vdot(a.ravel(), a.ravel()) for a in arrays])    # (n,)
    return float(parts.astype(xp.float64).sum())


def cosine_schedule(step: int, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate at `step` (counting from 0): linear warmup, cosine decay, then a floor.

    - step < warmup_steps: max_lr * (step + 1) / warmup_steps, so step 0 is
      already non-zero and step warmup_steps - 1 reaches max_lr;
    - warmup_steps <= step < decay_steps: cosine from max_lr (at warmup_steps)
      towards min_lr;
    - step >= decay_steps: min_lr, where the cosine ends.

    `decay_steps` counts from step 0, warmup included (nanoGPT's lr_decay_iters).
    """
    if step < 0 or warmup_steps < 0 or decay_steps < warmup_steps:
        raise ValueError(
            f"need step >= 0 and 0 <= warmup_steps <= decay_steps, got step={step}, "
            f"warmup_steps={warmup_steps}, decay_steps={decay_steps}"
        )
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / (decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def param_groups_for_weight_decay(model: "Module", weight_decay: float) -> list[dict[str, Any]]:
    """Two groups for an optimizer: matrices (ndim >= 2: linear and embedding
    weights) decay with `weight_decay`; vectors (biases, norm weights) get none,
    since shrinking a gain or an offset towards 0 is not a useful prior.
    Frozen parameters (requires_grad False) are left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
