"""Measure one configuration and turn it into a result record; measure many with resume.

A :class:`RunSpec` names what to build (a registered architecture, or one embedder) and how to
measure it.  :func:`run_spec` does it in this process; :func:`run_isolated` does it in a fresh
subprocess (the default for sweeps and the CLI) so that peak RSS belongs to that configuration
alone and glibc's allocator settings are in force from process start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from vlpbench.errors import VlpbenchError
from vlpbench.store import SCHEMA, RunDir, config_key

from .protocol import Protocol

COMPONENTS = {"arch": ("arch", None, None), "visual": ("visual", "visual", "VE"), "text": ("text", "text", "TE")}
DTYPES = ("float32", "bfloat16", "float16")
# How a configuration is measured or reported, not what is measured: left out of its key.
NOT_IN_KEY = ("protocol", "trace_dir", "progress", "peak_file")
RECOMMENDED_GLIBC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
# More intra-op threads than this per CPU is no measurement anyone wants (and far more makes libgomp abort).
THREADS_PER_CPU = 4


def max_threads() -> int:
    return THREADS_PER_CPU * (os.cpu_count() or 1)


@dataclass(frozen=True)
class RunSpec:
    target: str  # registry name (or alias) of the architecture / embedder
    component: str = "arch"  # "arch", "visual" or "text": which registry `target` is in
    overrides: dict[str, Any] = field(default_factory=dict)  # config overrides for the preset
    workload: dict[str, Any] = field(default_factory=dict)  # image_size [H, W], text_len, regions (see apply_workload)
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    dtype: str = "float32"  # float32, bfloat16, float16 (weights and inputs, or autocast dtype)
    amp: bool = False  # autocast to `dtype` instead of casting the model
    tf32: bool = False  # CUDA: allow TF32 in matmuls and cuDNN convolutions
    cudnn_benchmark: bool = False  # CUDA: let cuDNN pick kernels by trying them
    batch_size: int = 1
    threads: int = 1  # torch intra-op threads (recorded; the CLI's and README's default)
    seed: int = 0  # seeds the inputs (and random init)
    tiny: bool = False  # build the tiny test-size variant
    protocol: Protocol = field(default_factory=Protocol)
    count_flops: bool = True
    taxonomy_factor: float = 3.0
    plugins: list[str] = field(default_factory=list)  # modules imported before building (they register models)
    weights: str | None = None  # a transformers save_pretrained directory (ViLT or CLIP) to load
    variant: str = "eager"  # eager, jit-freeze, inductor, inductor-freeze, cuda-graphs
    trace_dir: str | None = None  # write a Chrome trace of a separate traced pass here
    progress: bool = False  # progress lines on stderr between timed iterations
    peak_file: str | None = None  # `vlpbench peak` file (default: reports/peak.json if present)

    def validate(self) -> RunSpec:
        import torch

        if self.component not in COMPONENTS:
            raise VlpbenchError(f"invalid component {self.component!r}; accepted: {', '.join(COMPONENTS)}")
        dev = str(self.device)
        if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise VlpbenchError(f"invalid device {dev!r}; accepted: cpu, cuda, cuda:N")
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise VlpbenchError(f"device {dev!r} requested but CUDA is not available here; accepted: cpu")
        if dev.startswith("cuda:") and int(dev[5:]) >= torch.cuda.device_count():
            raise VlpbenchError(f"device {dev!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        if self.dtype not in DTYPES:
            raise VlpbenchError(f"invalid dtype {self.dtype!r}; accepted: {', '.join(DTYPES)}")
        if (self.tf32 or self.cudnn_benchmark) and not dev.startswith("cuda"):
            raise VlpbenchError("tf32 / cudnn_benchmark apply to CUDA only; accepted on cpu: off")
        if self.dtype == "float16" and dev == "cpu":
            raise VlpbenchError("dtype 'float16' is not supported on cpu; accepted on cpu: float32, bfloat16")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise VlpbenchError(f"invalid batch size {self.batch_size!r}; accepted: an integer >= 1")
        if not isinstance(self.threads, int) or not 1 <= self.threads <= max_threads():
            raise VlpbenchError(
                f"invalid thread count {self.threads!r}; accepted: an integer from 1 to "
                f"{max_threads()} ({THREADS_PER_CPU} per CPU of this machine's {os.cpu_count()})"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**64:
            raise VlpbenchError(f"invalid seed {self.seed!r}; accepted: an integer from 0 to 2**64-1")
        if not self.taxonomy_factor >= 1:
            raise VlpbenchError(f"invalid taxonomy factor {self.taxonomy_factor!r}; accepted: a number >= 1")
        self.protocol.validate()
        from .variants import validate_variant

        validate_variant(self.variant, dev)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = dict(d)
        d["protocol"] = Protocol(**d.get("protocol", {}))
        return cls(**d)

    def key(self) -> str:
        """Identity of the configuration (what is measured, not the protocol's iteration counts)."""
        d = self.to_dict()
        for how in NOT_IN_KEY:
            d.pop(how)
        if not d["plugins"]:
            d.pop("plugins")
        for opt in ("weights", "tf32", "cudnn_benchmark"):
            if not d[opt]:
                d.pop(opt)
        if d["variant"] == "eager":
            d.pop("variant")  # keys of eager configurations stay what they were before variants existed
        return config_key(d)


def load_plugins(plugins: Iterable[str]) -> None:
    import importlib

    for name in plugins:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise VlpbenchError(f"cannot import plugin module {name!r}: {exc}") from exc
        except Exception as exc:  # a plugin is user code: its failure is reported as one line naming it
            where = f" ({exc.filename}:{exc.lineno})" if isinstance(exc, SyntaxError) else ""
            raise VlpbenchError(
                f"plugin module {name!r} failed while importing: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}{where}"
            ) from exc


def _registry(component: str, plugins: Iterable[str] = ()):
    from vlpbench.presets import load_all
    from vlpbench.registry import ARCH, TEXT, VISUAL

    load_all()
    load_plugins(plugins)
    return {"arch": ARCH, "visual": VISUAL, "text": TEXT}[component]


WORKLOAD_FIELDS = {
    "image_size": ("image_size",),
    "text_len": ("text_len", "max_len", "max_text_len", "context_length", "seq_len"),
    "regions": ("num_regions", "regions", "top_k"),
}


def _apply_to(cfg: Any, what: str, workload: dict[str, Any], only: Iterable[str]) -> dict[str, Any]:
    """Overrides that set ``workload`` keys in ``only`` on a component config; error if unsupported."""
    names = {f.name for f in dataclasses.fields(cfg)}
    out: dict[str, Any] = {}
    for key in only:
        if key not in workload:
            continue
        field_name = next((f for f in WORKLOAD_FIELDS[key] if f in names), None)
        if field_name is None:
            raise VlpbenchError(f"{what} has no {key} to set (its options: {', '.join(sorted(names))})")
        value = workload[key]
        out[field_name] = tuple(value) if isinstance(value, list) else value
    return out


def apply_workload(entry, cfg: Any, workload: dict[str, Any], component: str) -> Any:
    """Return ``cfg`` with the workload (image size, text length, regions) applied to the right fields."""
    unknown = sorted(set(workload) - set(WORKLOAD_FIELDS))
    if unknown:
        raise VlpbenchError(f"invalid workload key(s) {', '.join(unknown)}; accepted: {', '.join(WORKLOAD_FIELDS)}")
    if not workload:
        return cfg
    if component == "visual":
        return dataclasses.replace(
            cfg, **_apply_to(cfg, f"visual embedder {entry.name!r}", workload, ("image_size", "regions"))
        )
    if component == "text":
        return dataclasses.replace(cfg, **_apply_to(cfg, f"text embedder {entry.name!r}", workload, ("text_len",)))
    from vlpbench.architectures.compose import ArchConfig
    from vlpbench.registry import TEXT, VISUAL

    if not isinstance(cfg, ArchConfig):
        # a monolithic architecture config: its own fields carry the workload
        return dataclasses.replace(
            cfg, **_apply_to(cfg, f"architecture {entry.name!r}", workload, tuple(WORKLOAD_FIELDS))
        )
    vis_entry, txt_entry = VISUAL.get(cfg.visual), TEXT.get(cfg.text)
    vis_cfg = vis_entry.make_config(tiny=cfg.tiny, **cfg.visual_overrides)
    txt_cfg = txt_entry.make_config(tiny=cfg.tiny, **cfg.text_overrides)
    vis = _apply_to(vis_cfg, f"visual embedder {cfg.visual!r} of {entry.name!r}", workload, ("image_size", "regions"))
    txt = _apply_to(txt_cfg, f"text embedder {cfg.text!r} of {entry.name!r}", workload, ("text_len",))
    return dataclasses.replace(
        cfg, visual_overrides={**cfg.visual_overrides, **vis}, text_overrides={**cfg.text_overrides, **txt}
    )


def combination_entry(target: str):
    """A registry-style entry for an ad-hoc architecture ``visual+text+interaction[+head]``."""
    from vlpbench.architectures.compose import ArchConfig, VLPModel
    from vlpbench.registry import HEAD, INTERACTION, TEXT, VISUAL, Entry

    parts = target.split("+")
    if len(parts) not in (3, 4):
        raise VlpbenchError(f"invalid combination {target!r}; accepted: VISUAL+TEXT+INTERACTION[+HEAD]")
    names = [VISUAL.resolve(parts[0]), TEXT.resolve(parts[1]), INTERACTION.resolve(parts[2])]
    head = HEAD.resolve(parts[3]) if len(parts) == 4 else None
    cfg = ArchConfig(visual=names[0], text=names[1], interaction=names[2], head=head)
    return Entry(
        "+".join(names + ([head] if head else [])),
        VLPModel.from_config,
        cfg,
        description="ad-hoc combination",
        tiny={"tiny": True},
    )  # --tiny: every component at its tiny size


def _load_weights(spec: RunSpec, entry):
    """The architecture of ``spec`` with a local transformers checkpoint's weights (``spec.weights``)."""
    from vlpbench.architectures.loaders import checkpoint_type, load_hf_checkpoint

    family = next((t.split(":", 1)[1] for t in entry.tags if t.startswith("hf:")), None)
    if spec.component != "arch" or family is None:
        loadable = [e.name for e in _registry("arch").entries() if any(t.startswith("hf:") for t in e.tags)]
        raise VlpbenchError(f"--weights is not supported for {spec.target!r}; accepted: {', '.join(loadable)}")
    kind = checkpoint_type(spec.weights)
    if kind != family:
        raise VlpbenchError(
            f"checkpoint {spec.weights!r} is a {kind!r} model; {entry.name!r} needs a {family!r} checkpoint"
        )
    return load_hf_checkpoint(
        spec.weights, image_size=spec.workload.get("image_size"), text_len=spec.workload.get("text_len")
    ).eval()


def build_target(spec: RunSpec):
    """Build the module for ``spec`` (eval mode) and return (module, registry entry, config)."""
    import torch

    reg = _registry(spec.component, spec.plugins)
    entry = combination_entry(spec.target) if spec.component == "arch" and "+" in spec.target else reg.get(spec.target)
    torch.manual_seed(spec.seed)
    cfg = entry.make_config(tiny=spec.tiny, **spec.overrides)
    cfg = apply_workload(entry, cfg, spec.workload, spec.component)
    if spec.weights is not None:
        return _load_weights(spec, entry), entry, cfg
    module = entry.builder(cfg)
    return module.eval(), entry, cfg


def _config_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


def _params(module) -> dict[str, Any]:
    out = {"total": int(sum(p.numel() for p in module.parameters()))}
    for part in ("visual", "text", "interaction", "head"):
        sub = getattr(module, part, None)
        if sub is not None and hasattr(sub, "parameters"):
            out[part] = int(sum(p.numel() for p in sub.parameters()))
    return out


def _cast_inputs(inputs: dict[str, Any], dtype) -> dict[str, Any]:
    return {
        k: (v.to(dtype) if hasattr(v, "is_floating_point") and v.is_floating_point() else v) for k, v in inputs.items()
    }


def visual_schema(module: Any, component: str) -> str | None:
    """The visual embedder's declared ``TokenSpec.schema`` (region, grid, patch), None when none is declared.

    An architecture exposes its visual embedder as ``module.visual`` (VLPModel does); a monolithic plugin
    architecture without one records None.
    """
    embedder = module if component == "visual" else getattr(module, "visual", None) if component == "arch" else None
    return embedder.output_spec().schema if embedder is not None else None


def _extras(output: Any) -> dict[str, Any]:
    """Workload facts measured in the forward (e.g. proposals kept), found on the output."""
    found: dict[str, Any] = {}
    for obj in (output, getattr(output, "interaction", None)):
        ex = getattr(obj, "extras", None)
        if isinstance(ex, dict):
            found.update({k: v for k, v in ex.items() if isinstance(v, (int, float, str, bool, list))})
    return found


def run_spec(spec: RunSpec, isolated: bool = False, drive: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Measure ``spec`` in this process and return its result record.

    ``drive(measurement)``, if given, runs the instrumented iterations itself (pytest-benchmark does
    this in ``benchmarks/``); otherwise the protocol runs them.  The process's thread count and CUDA
    flags are restored afterwards, so an in-process measurement leaves no global change behind.
    """
    import torch

    saved = (
        torch.get_num_threads(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    try:
        return _run_spec(spec, isolated, drive)
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
        raise VlpbenchError(
            f"{spec.target!r} ran out of memory at workload {spec.workload or 'default'}, batch "
            f"{spec.batch_size} ({str(exc).splitlines()[0][:120]}); accepted: a smaller "
            "--image-size, --batch-size or --text-len"
        ) from exc
    finally:
        torch.set_num_threads(saved[0])
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = (
            saved[1:]
        )


def out_of_memory(exc: BaseException) -> bool:
    """True for an allocation the machine could not satisfy (host or CUDA), never for other errors."""
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def _run_spec(spec: RunSpec, isolated: bool, drive: Callable[[Any], None] | None) -> dict[str, Any]:
    import torch

    from vlpbench.stages import null_stage, scoped

    from . import env as envmod
    from .flops import count_flops
    from .memory import MemoryMonitor
    from .peak import attach_efficiency, load_peak
    from .progress import Progress, progress_stream
    from .protocol import Measurement
    from .taxonomy import classify

    spec.validate()
    state_before = envmod.machine_state()
    threads = envmod.set_threads(spec.threads)
    if spec.device.startswith("cuda"):
        # set per measured configuration (never at import); recorded in env by capture()
        torch.backends.cuda.matmul.allow_tf32 = spec.tf32
        torch.backends.cudnn.allow_tf32 = spec.tf32
        torch.backends.cudnn.benchmark = spec.cudnn_benchmark
    module, entry, cfg = build_target(spec)
    device = torch.device(spec.device)
    dtype = getattr(torch, spec.dtype)
    module.to(device)
    if not spec.amp and dtype != torch.float32:
        module.to(dtype)
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    inputs = module.make_inputs(spec.batch_size, generator=gen, device=device)
    if not spec.amp:
        inputs = _cast_inputs(inputs, dtype)
    _, prefix, group = COMPONENTS[spec.component]

    def context():
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if spec.amp:
            stack.enter_context(torch.autocast(device.type, dtype=dtype))
        return stack

    def fn(stage):
        with context():
            return module(**inputs, stage=scoped(stage, prefix, group) if prefix else stage)

    timed_fn, variant = fn, {"name": spec.variant}
    protocol = spec.protocol
    if spec.variant != "eager":
        from .variants import build_variant, output_difference

        run, facts = build_variant(spec.variant, module, inputs, context)
        variant.update(facts, **output_difference(fn(null_stage), run()))
        timed_fn = lambda stage: run()  # noqa: E731  (a compiled program has no stages to time)
        protocol = dataclasses.replace(protocol, uninstrumented=False)
    label = entry.name if spec.variant == "eager" else f"{entry.name} [{spec.variant}]"
    stream = progress_stream() if spec.progress else None
    m = Measurement(timed_fn, spec.device, protocol, progress=Progress(label, stream) if stream else None)
    with MemoryMonitor(spec.device, isolated=isolated) as mem:
        m.warmup()
        m.calibrate_empty_stage()
        if drive is not None:
            drive(m)
        m.timed_loop()
    timing = m.result()
    memory = mem.result()
    extras = _extras(m.last_output if spec.variant == "eager" else fn(null_stage))
    flops = count_flops(fn) if spec.count_flops else None
    trace = None
    if spec.trace_dir:
        from .trace import trace_pass, trace_path

        trace = trace_pass(timed_fn, spec.device, trace_path(spec.trace_dir, entry.name, spec.key()))
    state_after = envmod.machine_state()

    workload = {"batch_size": spec.batch_size, **module.workload(), **{f"measured.{k}": v for k, v in extras.items()}}
    env = {
        **envmod.capture(spec.device, spec.dtype, spec.amp),
        "threads": threads,
        "machine": {"before": state_before, "after": state_after},
        "busy": envmod.busy_flag(state_before, state_after, threads["intra_op"]),
    }
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "latency",
        "key": spec.key(),
        "arch": entry.name,
        "component": spec.component,
        "visual_schema": visual_schema(module, spec.component),
        "spec": spec.to_dict(),
        "config": _config_dict(cfg),
        "workload": workload,
        "protocol": {**protocol.to_dict(), "warmup_used": protocol.warmup_for(spec.device)},
        **timing,
        "params": _params(module),
        "flops": flops,
        "memory": memory,
        "paper": dict(entry.paper),
        "env": env,
        "variant": variant,
        "trace": trace,
        "status": "ok",
    }
    attach_efficiency(record, load_peak(spec.peak_file, spec.device, threads["intra_op"]))
    if spec.component == "arch" and spec.variant == "eager":
        g = timing["groups"]
        med = lambda k: g[k]["median_ms"] if k in g else 0.0  # noqa: E731
        record["taxonomy"] = classify(
            med("VE"), med("TE"), med("MI"), spec.taxonomy_factor, paper_class=entry.paper.get("class")
        )
    return record


def _progress_fd() -> int | None:
    """A duplicate of this process's stderr for a child to write progress to (None if stderr has no fd)."""
    try:
        return os.dup(sys.stderr.fileno())
    except (AttributeError, ValueError, OSError):
        return None


def _image_size(cfg: Any) -> tuple[int, int] | None:
    """The input image size a built config will use (its own field, or its visual embedder's)."""
    size = getattr(cfg, "image_size", None)
    if size is None and all(hasattr(cfg, a) for a in ("visual", "visual_overrides", "tiny")):
        from vlpbench.registry import VISUAL

        size = getattr(VISUAL.get(cfg.visual).make_config(tiny=cfg.tiny, **cfg.visual_overrides), "image_size", None)
    if size is None:
        return None
    size = (size, size) if isinstance(size, int) else tuple(size)
    return (int(size[0]), int(size[1])) if len(size) == 2 else None


def memory_limit_bytes(device: str) -> int:
    """The memory a measurement on ``device`` can use at most: physical RAM, or the GPU's total memory."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(spec: RunSpec, cfg: Any) -> None:
    """Refuse, before building, an image size / batch whose input alone cannot fit in memory.

    A lower bound, never a guess: the pixels ([B, 3, H, W] at ``dtype``) and their normalised copy, which
    every visual embedder makes in its preprocess stage.
    """
    size = _image_size(cfg)
    if size is None:
        return
    itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}[spec.dtype]
    need = 2 * spec.batch_size * 3 * size[0] * size[1] * itemsize
    limit = memory_limit_bytes(spec.device)
    if need > limit:
        raise VlpbenchError(
            f"image size {size[0]}x{size[1]} at batch {spec.batch_size} cannot fit: its input and normalised copy "
            f"alone need {need / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB of {spec.device} memory here; "
            "accepted: a smaller --image-size or --batch-size"
        )


def preflight(spec: RunSpec) -> RunSpec:
    """Everything about ``spec`` that can be checked without measuring, in this process, before any
    subprocess starts or run directory is written: fields, plugins, names, workload keys, local weights,
    and that the input fits in memory.  Returns ``spec``."""
    spec.validate()
    reg = _registry(spec.component, spec.plugins)
    entry = combination_entry(spec.target) if spec.component == "arch" and "+" in spec.target else reg.get(spec.target)
    cfg = apply_workload(entry, entry.make_config(tiny=spec.tiny, **spec.overrides), spec.workload, spec.component)
    if spec.weights is not None:
        from vlpbench.architectures.loaders import checkpoint_type, verify_checkpoint

        family = next((t.split(":", 1)[1] for t in entry.tags if t.startswith("hf:")), None)
        if spec.component != "arch" or family is None or checkpoint_type(spec.weights) != family:
            _load_weights(spec, entry)  # raises the "not supported for" / "is a ... model" message
        verify_checkpoint(spec.weights)
    check_memory(spec, cfg)
    return spec


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GLIBC_TUNABLES", RECOMMENDED_GLIBC_TUNABLES)
    # the child imports what this process can import (plugins included)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    env["VLPBENCH_PARENT_PID"] = str(os.getpid())  # the worker dies with this process (worker.follow_parent)
    return env


def _run_worker(spec: RunSpec, out: str, timeout_s: float | None) -> dict[str, Any]:
    """Run the worker writing ``out`` (the record, or ``{"error": ...}``); return what it wrote."""
    from .worker import error_path

    err = error_path(out)
    env = _worker_env()
    progress_fd = _progress_fd() if spec.progress else None
    if progress_fd is not None:
        env["VLPBENCH_PROGRESS_FD"] = str(progress_fd)  # the child's progress lines reach our stderr
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "vlpbench.harness.worker", out],
            input=json.dumps(spec.to_dict()),
            text=True,
            capture_output=True,
            env=env,
            timeout=timeout_s,
            pass_fds=() if progress_fd is None else (progress_fd,),
        )
    finally:
        if progress_fd is not None:
            os.close(progress_fd)
    if os.path.exists(err):
        with open(err) as f:
            message = json.load(f)["error"]
        os.unlink(err)
        raise VlpbenchError(message)
    if proc.returncode == 0 and os.path.exists(out):
        with open(out) as f:
            return json.load(f)
    if proc.returncode < 0:  # killed from outside (the kernel's OOM killer, a user): not a bug to trace back
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else proc.returncode
        raise VlpbenchError(
            f"the worker measuring {spec.target!r} was killed by {name}"
            f"{' (the out-of-memory killer sends SIGKILL)' if name == 'SIGKILL' else ''}; "
            "nothing was recorded for it; accepted: run again (it resumes), with a smaller workload "
            "if memory ran out"
        )
    raise RuntimeError(
        f"measurement of {spec.target!r} failed in its subprocess (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    )


def run_isolated(spec: RunSpec, timeout_s: float | None = None, run_dir: RunDir | None = None) -> dict[str, Any]:
    """Measure ``spec`` in a fresh Python process (exact peak RSS; allocator settings from start).

    With ``run_dir`` the worker writes the record straight into it (atomically, under its key), so a
    record finished just before this process is killed is kept and reused on resume, and no temporary
    directory is involved; without, it writes into a ``vlpbench-*`` temporary directory removed here.
    The worker dies with this process (it never outlives a killed parent).
    """
    preflight(spec)
    if run_dir is not None:
        rec = _run_worker(spec, str(run_dir.record_path(spec.key())), timeout_s)
        from vlpbench.schema import check_key

        check_key(rec, spec.key(), str(run_dir.record_path(spec.key())))  # the worker saw the same configuration
        return rec
    with tempfile.TemporaryDirectory(prefix="vlpbench-") as tmp:
        return _run_worker(spec, os.path.join(tmp, "record.json"), timeout_s)


def _measure_into(spec: RunSpec, run_dir: RunDir, isolated: bool) -> dict[str, Any]:
    if isolated:
        return run_isolated(spec, run_dir=run_dir)
    rec = run_spec(spec)
    run_dir.write(rec)
    return rec


def run_many(
    specs: Iterable[RunSpec],
    run_dir: RunDir,
    isolated: bool = True,
    progress: Callable[[str, RunSpec], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every spec into ``run_dir``, skipping those whose record is already complete (resume).

    Every spec is checked (:func:`preflight`) before the first is measured.  Each configuration is
    measured under its claim (:meth:`RunDir.claim`): one claimed by another live process is left to it
    and, once every other is done, read from its record (or measured here if that process died first).
    ``progress(event, spec)`` is called once per spec, event "run" or "skip".
    """
    specs = [preflight(s) for s in specs]
    done: dict[str, dict[str, Any]] = {}
    deferred: list[RunSpec] = []
    for spec in specs:
        key = spec.key()
        if key in done or run_dir.has(key):
            if progress:
                progress("skip", spec)
            done.setdefault(key, run_dir.read(key))
            continue
        with run_dir.claim(key) as mine:
            if not mine:
                deferred.append(spec)
                continue
            if progress:
                progress("run", spec)
            done[key] = _measure_into(spec, run_dir, isolated)
    for spec in deferred:
        key = spec.key()
        with run_dir.claim(key, wait=True):
            if run_dir.has(key):
                if progress:
                    progress("skip", spec)
                done[key] = run_dir.read(key)
            else:
                if progress:
                    progress("run", spec)
                done[key] = _measure_into(spec, run_dir, isolated)
    return [done[s.key()] for s in specs]
