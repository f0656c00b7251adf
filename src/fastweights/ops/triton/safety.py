"""The first-use check of the Triton kernels: a safety net for GPUs, Triton versions and drivers nobody tested.

On the first call of an op's ``"triton"`` implementation with CUDA tensors, per **(op, version, device, dtype)**
(e.g. ``("delta_lstm", 4, "cuda:0", torch.bfloat16)``), the kernel runs once on a tiny input built from the op's
spec (:data:`fastweights.ops.SPECS`): batch 2, 2 heads, 40 steps (resets at the first step, in the middle, on a
chunk boundary and at the last step), a random initial state, the head sizes of the call that triggered the check,
the default ``chunk_size``/``checkpoint_every``. Its output, final state and the gradients of every input and of
the initial state (of a random weighted sum of the output and the final state) are compared with those of the
PyTorch implementation that ``impl="auto"`` would run there without Triton (``chunked`` or ``checkpointed``) in
float64, as relative Frobenius errors, within :data:`TOLERANCES`.

If the kernel raises (a compilation or launch error, anything) or a result is off, ``"triton"`` is switched off
for that op, version, device and dtype for the rest of the process: its registry ``supports`` declines those calls
(a :class:`~fastweights.ops.common.registry.Choice`, so the registry adds no notice of its own) and the PyTorch
implementation runs them, also for an explicit ``impl="triton"``. One ``warnings.warn`` says so, naming the op, the
device, the dtype and the error or the largest mismatch. A passed check is remembered too: later calls cost one
dictionary look-up.

The check is skipped (the kernel runs unchecked) for tensors of other device types (the CPU tensors that the
interpreter tests pass to an explicit ``impl="triton"``; :data:`DEVICE_TYPES`), while ``torch.compile`` traces,
while a CUDA graph is being captured, for a call made from inside the check of the same key, and when switched off
by the environment variable ``FASTWEIGHTS_TRITON_CHECK=0`` or :func:`set_triton_check`. ``fastweights selftest``
switches it off to measure the kernels themselves.

The numerics helpers (:func:`make_example`, :func:`run_example`, :func:`compare`) are shared with
``fastweights selftest``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..common.registry import IMPLEMENTATIONS, Choice, Implementation
from ..common.spec import SPECS, OpSpec

ENV = "FASTWEIGHTS_TRITON_CHECK"
DEVICE_TYPES: tuple[str, ...] = ("cuda",)  # device types whose first use is checked (the tests patch in "cpu")
# (outputs and final states, gradients): relative Frobenius error against float64, per input dtype
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-3, 1e-3), torch.bfloat16: (1e-2, 2e-2), torch.float16: (1e-2, 2e-2),
    torch.float64: (1e-8, 1e-8),
}
CHECK_SHAPE = {"B": 2, "T": 40, "H": 2}  # the head sizes come from the call
DEFAULT_HEAD = 16  # when the call's head sizes cannot be read off its arguments
_FALSE = ("0", "false", "no", "off", "n")
# where a warning must not point (our frames and torch's, e.g. ``nn.Module.__call__``)
_PACKAGES = tuple({str(p) for d in (Path(__file__).parents[2], Path(torch.__file__).parent) for p in (d, d.resolve())})

Key = tuple[str, "int | None", str, torch.dtype]  # (op, version, device, dtype)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The first-use check of one key: ``ok`` (keep the kernel) and, when not, ``problem`` and the ``fallback``."""

    ok: bool
    problem: str | None = None
    fallback: str | None = None


_RESULTS: dict[Key, Outcome] = {}
_RUNNING: set[Key] = set()
_LOCK = threading.RLock()  # one check at a time; re-entrant: a recurrent op's check runs the delta rule's
_ENABLED: bool | None = None  # set_triton_check; None: the environment variable decides


# ------------------------------------------------------------------------------------------------ switches


def set_triton_check(enabled: bool | None) -> bool | None:
    """Switch the first-use check of the Triton kernels on (``True``), off (``False``) or back to the environment
    variable ``FASTWEIGHTS_TRITON_CHECK`` (``None``; on unless it is ``0``). Returns the previous setting.
    Results of checks already run are kept (:func:`reset_triton_checks` forgets them)."""
    global _ENABLED
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected True, False or None, got {enabled!r}")
    previous, _ENABLED = _ENABLED, enabled
    return previous


def triton_check_enabled() -> bool:
    """Whether the first use of a Triton kernel on a CUDA device is checked (see :func:`set_triton_check`)."""
    if _ENABLED is not None:
        return _ENABLED
    return os.environ.get(ENV, "1").strip().lower() not in _FALSE


@contextmanager
def triton_check(enabled: bool | None) -> Iterator[None]:
    """:func:`set_triton_check` for the duration of a ``with`` block."""
    previous = set_triton_check(enabled)
    try:
        yield
    finally:
        set_triton_check(previous)


def reset_triton_checks() -> None:
    """Forget every check result: the next use of each kernel is checked again (and may warn again)."""
    with _LOCK:
        _RESULTS.clear()


def triton_check_results() -> dict[Key, Outcome]:
    """The checks run so far: ``{(op, version, device, dtype): Outcome}``."""
    return dict(_RESULTS)


# ------------------------------------------------------------------------------------------------ numerics


@dataclasses.dataclass(frozen=True)
class Example:
    """Inputs of one check: ``xs`` (the op's flat tensor arguments, in ``dtype``), ``state`` (initial-state
    components ``[B, H, ...]``, float32; float64 for float64 inputs), ``reset`` (bool ``[B, T]``) and ``kwargs``
    (``version``, ``depth``)."""

    op: str
    dtype: torch.dtype
    xs: list[Tensor]
    names: list[str]
    state: list[Tensor]
    state_names: list[str]
    reset: Tensor
    kwargs: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Relative Frobenius errors (``errors``: ``{"output": e, "final S": e, "grad q": e, ...}``) against an oracle,
    the tolerances, the worst entry relative to its tolerance (``worst``, ``worst_err``, ``worst_tol``) and
    ``passed`` (every error finite and within its tolerance)."""

    errors: dict[str, float]
    tol_out: float
    tol_grad: float
    worst: str
    worst_err: float
    worst_tol: float
    passed: bool

    def describe(self) -> str:
        """``"largest mismatch: grad k, relative error 3.1e-01 (tolerance 2e-02)"``."""
        return f"largest mismatch: {self.worst}, relative error {self.worst_err:.1e} (tolerance {self.worst_tol:.0e})"


def reset_positions(B: int, T: int) -> Tensor:
    """bool ``[B, T]``: resets at t = 0 and mid-sequence in the first sequence, on the chunk boundary t = 16 and at
    the last step in the last one."""
    r = torch.zeros(B, T, dtype=torch.bool, device="cpu")
    for b, t in ((0, 0), (0, T // 2), (B - 1, 16), (B - 1, T - 1)):
        if 0 <= t < T:
            r[b, t] = True
    return r


def make_example(spec: OpSpec, *, B: int, T: int, H: int, K: int, V: int, dtype: torch.dtype,
                 device: str | torch.device = "cpu", version: int | None = None, depth: int = 1,
                 seed: int = 0) -> Example:
    """Activated random inputs of ``spec`` (``[B, T, H, K]`` queries and so on, as a layer produces them, drawn in
    float32 on ``device`` and cast to ``dtype``), an initial state scaled by 0.5 and :func:`reset_positions`."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, device=device)

    xs = [x.to(dtype) for x in spec.example_inputs(rand, B, T, H, K, V, version=version, depth=depth)]
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    state = [(0.5 * s).to(state_dtype) for s in spec.example_state(rand, B, H, K, V, depth=depth)]
    names = [a.name for a in spec.arg_specs(depth)]
    single = spec.state_type is None and not spec.layered
    state_names = ["initial_state"] if single else [f"initial_state.{n}" for n, _ in spec.state_specs(depth)]
    kwargs: dict[str, Any] = {} if version is None else {"version": version}
    if spec.layered:
        kwargs["depth"] = depth
    return Example(spec.name, dtype, xs, names, state, state_names, reset_positions(B, T).to(device), kwargs)


@dataclasses.dataclass(frozen=True)
class Run:
    """What :func:`run_example` returns (detached): the output, the final-state components and the gradients of
    the inputs and of the initial-state components, in :class:`Example` order."""

    output: Tensor
    final: list[Tensor]
    grads: list[Tensor]
    state_grads: list[Tensor]


def _initial_state(spec: OpSpec, parts: Sequence[Tensor]) -> Any:
    if spec.layered:
        return tuple(parts)
    return parts[0] if spec.state_type is None else spec.state_type(*parts)


def run_example(spec: OpSpec, ex: Example, fn: Callable[..., tuple[Tensor, Any]] | None = None, *,
                impl: str | None = None, dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                seed: int = 1234) -> Run:
    """Forward and backward of ``ex`` through ``fn`` (a function with the op's signature; default the public op
    with ``impl=``), its inputs cast to ``dtype`` (and the state to float64 when ``dtype`` is float64) and moved to
    ``device`` (default: as in ``ex``). The loss is a random weighted sum of the output and every final-state
    component, with weights rounded to ``ex``'s dtypes so that every side sees the same loss."""
    dev = ex.xs[0].device if device is None else torch.device(device)
    st_dtype = torch.float64 if dtype == torch.float64 else None
    xs = [x.detach().to(dev, dtype).requires_grad_() for x in ex.xs]
    st = [s.detach().to(dev, st_dtype).requires_grad_() for s in ex.state]
    call_spec = spec if fn is None else dataclasses.replace(spec, fn=fn)
    kwargs = dict(ex.kwargs)
    if fn is None:
        kwargs["impl"] = impl
    with torch.enable_grad(), torch.inference_mode(False), torch.autocast(dev.type, enabled=False):
        out, fin = call_spec.call(xs, initial_state=_initial_state(spec, st), reset=ex.reset.to(dev),
                                  output_final_state=True, **kwargs)
        fin = [fin] if isinstance(fin, Tensor) else list(fin)
        g = torch.Generator().manual_seed(seed)
        loss = out.new_zeros((), dtype=torch.float64)
        for i, t in enumerate([out, *fin]):
            w = torch.randn(t.shape, generator=g, dtype=torch.float64, device="cpu")
            w = w.to(ex.dtype if i == 0 else torch.float32)
            loss = loss + (w.to(dev, torch.float64) * t.to(torch.float64)).sum()
        grads = torch.autograd.grad(loss, xs + st, allow_unused=True)
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(xs + st, grads)]
    n = len(xs)
    return Run(out.detach(), [f.detach() for f in fin], list(grads[:n]), list(grads[n:]))


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """``|a - e| / |e|`` (Frobenius norms, in float64 on ``expected``'s device; inf for another shape or a
    non-finite value; 0 when both are zero)."""
    if tuple(actual.shape) != tuple(expected.shape):
        return float("inf")
    a = actual.detach().to(expected.device, torch.float64)
    e = expected.detach().to(torch.float64)
    num, den = (a - e).norm().item(), e.norm().item()
    if not (num == num and num != float("inf")):  # NaN or inf
        return float("inf")
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def compare(ex: Example, test: Run, oracle: Run, tolerances: tuple[float, float] | None = None) -> Comparison:
    """``test`` against ``oracle`` (both from :func:`run_example` on ``ex``); ``tolerances`` (outputs and final
    states, gradients) default to :data:`TOLERANCES` of ``ex.dtype``."""
    tol_out, tol_grad = TOLERANCES[ex.dtype] if tolerances is None else tolerances
    finals = [n.replace("initial_state", "final state") for n in ex.state_names]
    entries = [("output", test.output, oracle.output, tol_out)]
    entries += [(n, a, e, tol_out) for n, a, e in zip(finals, test.final, oracle.final)]
    if len(test.final) != len(oracle.final):
        entries.append(("final state components", torch.zeros(len(test.final)), torch.zeros(len(oracle.final)),
                        tol_out))
    entries += [(f"grad {n}", a, e, tol_grad) for n, a, e in
                zip([*ex.names, *ex.state_names], [*test.grads, *test.state_grads],
                    [*oracle.grads, *oracle.state_grads])]
    errors = {name: rel_err(a, e) for name, a, e, _ in entries}
    tols = {name: tol for name, _, _, tol in entries}
    worst = max(errors, key=lambda n: errors[n] / tols[n])
    return Comparison(errors, tol_out, tol_grad, worst, errors[worst], tols[worst],
                      all(errors[n] <= tols[n] for n in errors))


# ------------------------------------------------------------------------------------------------ the check


def _describe(e: BaseException) -> str:
    text = " ".join(str(e).split())  # one line: compiler errors span many
    return f"{type(e).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def first_use_check(op: str, fn: Callable[..., tuple[Tensor, Any]], oracle: Callable[..., tuple[Tensor, Any]],
                    device: str | torch.device, dtype: torch.dtype, *, K: int = DEFAULT_HEAD,
                    V: int = DEFAULT_HEAD, version: int | None = None) -> tuple[bool, str | None]:
    """Run ``fn`` (the kernel, the op's signature) and ``oracle`` (the PyTorch implementation, run in float64) on
    the tiny input of the module docstring on ``device``; head sizes ``K``, ``V``.

    Returns ``(ok, problem)``: ``(True, None)`` when they agree; ``(False, "RuntimeError: ...")`` when ``fn``
    raises; ``(False, "largest mismatch: ...")`` when a result is off; ``(True, "could not check: ...")`` when the
    oracle raises (the kernel is not to blame).
    """
    # the caller may be under inference_mode/no_grad/autocast: the check builds normal tensors and needs autograd
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(torch.device(device).type, enabled=False):
        return _first_use_check(op, fn, oracle, device, dtype, K, V, version)


def _first_use_check(op: str, fn: Callable, oracle: Callable, device: str | torch.device, dtype: torch.dtype, K: int,
                     V: int, version: int | None) -> tuple[bool, str | None]:
    spec = SPECS[op]
    ex = make_example(spec, **CHECK_SHAPE, K=K, V=K if spec.square else V, dtype=dtype, device=device,
                      version=version)
    try:
        test = run_example(spec, ex, fn)
    except Exception as e:  # anything the kernel raises disables it: compile, launch, shape errors alike
        return False, _describe(e)
    try:
        expected = run_example(spec, ex, oracle, dtype=torch.float64)
    except Exception as e:
        return True, f"could not check: the PyTorch implementation raised {_describe(e)}"
    result = compare(ex, test, expected)
    return result.passed, None if result.passed else result.describe()


def fallback_for(op: str, name: str, device_type: str, args: tuple, kwargs: dict) -> Implementation | None:
    """The implementation ``impl="auto"`` picks for this call when ``name`` is left out (None: none takes it)."""
    ranked = sorted(IMPLEMENTATIONS[op].values(), key=lambda e: (-e.priority, e.name))
    for entry in ranked:
        if entry.name == name or not entry.meant_for(device_type):
            continue
        if entry.unavailable() is None and entry.refusal(*args, **kwargs) is None:
            return entry
    return None


def _head_sizes(spec: OpSpec, args: tuple) -> tuple[int, int]:
    dims: dict[str, int] = {}
    for a, x in zip(spec.arg_specs(), args):
        if isinstance(x, Tensor):
            axes = [s.strip() for s in a.layout.strip("[]").split(",")]
            if len(axes) == x.dim():
                for axis, size in zip(axes, x.shape):
                    dims.setdefault(axis, int(size))
    K = dims.get("K", dims.get("D", DEFAULT_HEAD))
    return K, dims.get("V", dims.get("F", K))


def _stacklevel() -> int:
    """The ``stacklevel`` that points a warning issued by our caller at the first frame outside fastweights and
    torch (the user's call)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGES):
        frame, level = frame.f_back, level + 1
    return level


def _skip(key: Key) -> bool:
    if not triton_check_enabled() or torch.compiler.is_compiling():
        return True
    return key[2].startswith("cuda") and torch.cuda.is_current_stream_capturing()


def _check(key: Key, name: str, fn: Callable, args: tuple, kwargs: dict) -> Outcome | None:
    op, version, device, dtype = key
    with _LOCK:  # another thread asking for the same key waits here for the result
        if key in _RESULTS:
            return _RESULTS[key]
        if key in _RUNNING:  # called from inside this key's own check (the lock is re-entrant): run unchecked
            return None
        fallback = fallback_for(op, name, torch.device(device).type, args, kwargs)
        if fallback is None:
            return None
        K, V = _head_sizes(SPECS[op], args)
        _RUNNING.add(key)
        try:
            ok, problem = first_use_check(op, fn, fallback.fn, device, dtype, K=K, V=V, version=version)
        finally:
            _RUNNING.discard(key)
        outcome = Outcome(ok, problem, None if ok else fallback.name)
        _RESULTS[key] = outcome
    what = f"the {name!r} implementation of {op}" + ("" if version is None else f" (version {version})")
    dt = str(dtype).removeprefix("torch.")
    if not ok:
        warnings.warn(f"fastweights: {what} failed its first-use check on {device} ({dt} inputs): {problem}; "
                      f"{op} runs the {fallback.name!r} implementation for these calls from now on "
                      f"(`fastweights selftest --device cuda` checks every kernel; {ENV}=0 skips this check)",
                      RuntimeWarning, stacklevel=_stacklevel())
    elif problem is not None:
        warnings.warn(f"fastweights: {what} on {device} ({dt} inputs) is used unchecked: {problem}",
                      RuntimeWarning, stacklevel=_stacklevel())
    return outcome


def _default_version(fn: Callable) -> int | None:
    param = inspect.signature(fn).parameters.get("version")
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _first_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)


def guard(op: str, name: str, supports: Callable[..., str | None], fn: Callable) -> Callable[..., str | None]:
    """The ``supports`` to register for the kernel ``fn`` (implementation ``name`` of ``op``): ``supports``'s own
    refusals first; then, for tensors of :data:`DEVICE_TYPES`, the first-use check of the call's (op, version,
    device, dtype), and a silent :class:`Choice` refusal wherever a check failed."""
    default_version = _default_version(fn)

    def guarded(*args: Any, **kwargs: Any) -> str | None:
        why = supports(*args, **kwargs)
        if why is not None:
            return why
        q = _first_tensor(args, kwargs)
        if q is None or q.device.type not in DEVICE_TYPES:
            return None  # e.g. CPU tensors under the interpreter: the kernel runs as asked
        key = (op, kwargs.get("version", default_version), str(q.device), q.dtype)
        outcome = _RESULTS.get(key)
        if outcome is None:
            if _skip(key):
                return None
            outcome = _check(key, name, fn, args, kwargs)
            if outcome is None:
                return None
        if outcome.ok:
            return None
        return Choice(f"its first-use check failed on {key[2]} ({outcome.problem})")

    guarded.__doc__ = f"``supports`` of {op}'s {name!r} implementation with the first-use check."
    return guarded
