"""Deployment variants: the same model as people ship it, each measured as its own configuration.

* ``eager``: the module as built; every stage is timed.
* ``jit-freeze``: ``torch.jit.trace`` then ``torch.jit.freeze`` (weights folded in as constants).
* ``inductor``: ``torch.compile(backend="inductor")``; the first call compiles (its time is recorded).
* ``inductor-freeze``: the same with ``torch._inductor.config.freezing`` (weights as constants, folded).
* ``cuda-graphs`` (CUDA only): one ``torch.cuda.CUDAGraph`` capture of the eager forward, replayed.

A compiled program has no Python between stages, so a variant other than ``eager`` is timed end to
end only: its record has no per-stage rows, and its FLOPs are those of the eager forward (the same
arithmetic).  Every variant's output is compared with eager's on the same inputs; the largest
difference, scaled by the largest eager magnitude (at least 1), is recorded and flagged above
``TOLERANCE``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from vlpbench.errors import VlpbenchError

VARIANTS = ("eager", "jit-freeze", "inductor", "inductor-freeze", "cuda-graphs")
TOLERANCE = 1e-4


def validate_variant(variant: str, device: str) -> None:
    if variant not in VARIANTS:
        raise VlpbenchError(f"invalid variant {variant!r}; accepted: {', '.join(VARIANTS)}")
    if variant == "cuda-graphs" and not str(device).startswith("cuda"):
        raise VlpbenchError(
            "variant 'cuda-graphs' needs a CUDA device; accepted on cpu: "
            + ", ".join(v for v in VARIANTS if v != "cuda-graphs")
        )


def tensor_paths(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """(path, tensor) for every tensor in a model output (dataclasses, dicts, lists), in a fixed order."""
    import torch

    if torch.is_tensor(obj):
        return [(path, obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [pt for f in dataclasses.fields(obj) for pt in tensor_paths(getattr(obj, f.name), path + (f.name,))]
    if isinstance(obj, dict):
        return [pt for k in obj for pt in tensor_paths(obj[k], path + (k,))]
    if isinstance(obj, (list, tuple)):
        return [pt for i, v in enumerate(obj) for pt in tensor_paths(v, path + (i,))]
    return []


def flatten_tensors(obj: Any) -> list[Any]:
    """Every tensor in a model output, in the order of :func:`tensor_paths`."""
    return [t for _, t in tensor_paths(obj)]


def _at(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = getattr(obj, p) if isinstance(p, str) and dataclasses.is_dataclass(obj) else obj[p]
    return obj


class _Flat:
    """``module(**inputs)`` as a function of positional tensors returning a tuple of tensors (for tracing).

    The tensors returned are those at the paths where the eager output holds tensors: under tracing a
    Python int in ``extras`` (a shape) turns into a tensor, which must not join the outputs.
    """

    def __init__(self, module: Any, keys: Sequence[str], paths: Sequence[tuple[Any, ...]]) -> None:
        self.module, self.keys, self.paths = module, list(keys), list(paths)

    def __call__(self, *tensors: Any) -> tuple[Any, ...]:
        out = self.module(**dict(zip(self.keys, tensors)))
        return tuple(_at(out, p) for p in self.paths)


def _as_module(flat: _Flat):
    import torch

    class FlatModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = flat.module

        def forward(self, *tensors):
            return flat(*tensors)

    return FlatModule().eval()


def _jit_freeze(flat: _Flat, args: tuple[Any, ...]) -> Callable[..., Any]:
    import torch

    traced = torch.jit.trace(_as_module(flat), args, check_trace=False, strict=False)
    return torch.jit.freeze(traced.eval())


def _inductor(flat: _Flat, args: tuple[Any, ...], freezing: bool) -> Callable[..., Any]:
    import torch
    import torch._inductor.config as inductor_config

    compiled = torch.compile(_as_module(flat), backend="inductor")

    def call(*a):
        with inductor_config.patch(freezing=freezing):
            return compiled(*a)

    return call


def _cuda_graph(flat: _Flat, args: tuple[Any, ...]) -> Callable[..., Any]:
    """Capture one forward into a CUDA graph (side-stream warm-up first, as torch's docs prescribe);
    the returned function replays it on the static inputs ``args`` and returns the static outputs."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            flat(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            static_out = flat(*args)
    except RuntimeError as exc:  # torch.AcceleratorError is one: a host read or a sync inside the forward
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VlpbenchError(
            f"variant 'cuda-graphs' could not capture this model's forward ({first}); a CUDA graph replays "
            "fixed shapes with no host reads or synchronisation inside the forward, which rules out "
            "data-dependent steps such as a detector's NMS and proposal counts; "
            f"accepted for this model: {', '.join(v for v in VARIANTS if v != 'cuda-graphs')}"
        ) from exc

    def replay(*a):
        graph.replay()
        return static_out

    return replay


def build_variant(
    variant: str, module: Any, inputs: dict[str, Any], context: Callable[[], Any]
) -> tuple[Callable[[], Any], dict[str, Any]]:
    """A no-argument callable running ``variant`` of ``module`` on ``inputs`` (inside ``context()``,
    e.g. inference mode + autocast), and the facts to record: build and first-call seconds."""
    keys = [k for k, v in inputs.items() if v is not None]
    args = tuple(inputs[k] for k in keys)
    with context():
        paths = [p for p, _ in tensor_paths(module(**inputs))]
    flat = _Flat(module, keys, paths)
    t0 = time.perf_counter()
    with context():
        if variant == "jit-freeze":
            prog = _jit_freeze(flat, args)
        elif variant in ("inductor", "inductor-freeze"):
            prog = _inductor(flat, args, freezing=variant == "inductor-freeze")
        elif variant == "cuda-graphs":
            prog = _cuda_graph(flat, args)
        else:
            raise VlpbenchError(f"variant {variant!r} has no builder; accepted: {', '.join(VARIANTS[1:])}")
    t1 = time.perf_counter()
    with context():
        prog(*args)  # first call: inductor compiles here
    t2 = time.perf_counter()

    def run() -> Any:
        with context():
            return prog(*args)

    return run, {"build_s": t1 - t0, "first_call_s": t2 - t1}


def output_difference(reference: Any, candidate: Any) -> dict[str, Any]:
    """Largest |candidate - eager| over every output tensor, absolute and scaled by max(1, max |eager|)."""
    import torch

    ref, got = flatten_tensors(reference), flatten_tensors(candidate)
    if len(ref) != len(got):
        return {
            "max_abs_diff": None,
            "max_scaled_diff": None,
            "within_tolerance": False,
            "note": f"{len(got)} output tensors, eager has {len(ref)}",
        }
    abs_diff, scaled = 0.0, 0.0
    for a, b in zip(ref, got):
        if not a.is_floating_point():
            same = torch.equal(a, b.to(a.dtype))
            abs_diff, scaled = (abs_diff, scaled) if same else (float("inf"), float("inf"))
            continue
        d = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
        mag = max(1.0, float(a.float().abs().max())) if a.numel() else 1.0
        abs_diff, scaled = max(abs_diff, d), max(scaled, d / mag)
    return {
        "max_abs_diff": abs_diff,
        "max_scaled_diff": scaled,
        "tolerance": TOLERANCE,
        "within_tolerance": bool(scaled <= TOLERANCE),
    }
