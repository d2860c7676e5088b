"""The deployment-variant axis at tiny size: its own configuration, end to end, its difference from eager."""

import pytest
import torch

from vlpbench.errors import VlpbenchError
from vlpbench.harness.protocol import Protocol
from vlpbench.harness.runner import RunSpec, run_spec
from vlpbench.harness.variants import TOLERANCE, flatten_tensors, output_difference
from vlpbench.types import VisualTokens

FAST = Protocol(warmup=1, min_iters=3, min_time_s=0.0)


def spec(**kw):
    return RunSpec(**{"target": "vilt-small", "tiny": True, "threads": 1, "protocol": FAST, **kw})


def test_jit_freeze_is_its_own_configuration_and_matches_eager():
    eager = run_spec(spec())
    frozen = run_spec(spec(variant="jit-freeze"))
    assert frozen["key"] != eager["key"] and eager["variant"] == {"name": "eager"}
    assert eager["key"] == spec().key()  # eager keys did not change with the axis
    v = frozen["variant"]
    assert v["name"] == "jit-freeze" and v["within_tolerance"] is True and v["max_scaled_diff"] <= TOLERANCE
    assert v["build_s"] > 0 and v["first_call_s"] > 0
    assert frozen["stages"] == [] and frozen["total"]["n"] == 3 and "uninstrumented" not in frozen
    assert frozen["flops"]["total"] == eager["flops"]["total"]  # same arithmetic, counted on eager
    assert "taxonomy" in eager and "taxonomy" not in frozen


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["inductor", "inductor-freeze"])
def test_inductor_variants_match_eager(variant):
    rec = run_spec(spec(variant=variant, count_flops=False))
    assert rec["variant"]["within_tolerance"] is True, rec["variant"]
    assert rec["variant"]["first_call_s"] > 0 and rec["total"]["n"] == 3


def test_bad_variant_and_cuda_graphs_on_cpu():
    with pytest.raises(VlpbenchError, match="invalid variant 'tensorrt'; accepted: eager, jit-freeze"):
        spec(variant="tensorrt").validate()
    with pytest.raises(VlpbenchError, match="'cuda-graphs' needs a CUDA device"):
        spec(variant="cuda-graphs").validate()


def test_flatten_and_difference():
    a = VisualTokens(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool), extras={"n": 3, "idx": torch.arange(3)})
    assert [t.shape for t in flatten_tensors({"x": a, "y": [torch.zeros(1)]})] == [(2, 3), (2, 3), (3,), (1,)]
    b = VisualTokens(a.features + 2e-4, a.mask, extras=dict(a.extras))
    d = output_difference(a, b)
    assert d["within_tolerance"] is False and d["max_abs_diff"] == pytest.approx(2e-4, rel=1e-3)
    big = VisualTokens(a.features * 1e3, a.mask)
    d = output_difference(big, VisualTokens(big.features + 2e-2, a.mask))  # scaled by max |eager| = 1000
    assert d["within_tolerance"] is True and d["max_scaled_diff"] == pytest.approx(2e-5, rel=1e-2)
    wrong_mask = VisualTokens(a.features, ~a.mask)
    assert output_difference(a, wrong_mask)["within_tolerance"] is False


def test_text_embedders_compile_without_graph_breaks():
    """The vocabulary check reads no value back to the host under torch.compile (it was a .item())."""
    from vlpbench.presets import load_all
    from vlpbench.registry import TEXT

    load_all()
    m = TEXT.build("bert-base-embed", tiny=True).eval()
    inputs = m.make_inputs(1, generator=torch.Generator().manual_seed(0))
    explained = torch._dynamo.explain(lambda **kw: m(**kw).features)(**inputs)
    assert explained.graph_break_count == 0, explained.break_reasons
    bad = dict(inputs, input_ids=inputs["input_ids"].clone().fill_(10**6))
    with pytest.raises(VlpbenchError, match="token id 1000000"):
        m(**bad)  # eager CPU keeps the one-line error


def test_cuda_graph_capture_failure_is_a_clear_error(monkeypatch):
    """A forward that cannot be captured (host reads, data-dependent shapes) stops with an error naming the
    variants the model accepts, not torch's cudaErrorStreamCapture* traceback.  Capture needs a GPU, so the
    CUDA stream and graph calls are stood in for; the forward raises what torch raises inside capture."""
    import contextlib

    from vlpbench.harness import variants

    class _Stream:
        def wait_stream(self, other):
            pass

    def forward(*args):
        if capturing:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore lines")
        return torch.zeros(1)

    capturing = False

    @contextlib.contextmanager
    def graph(g):
        nonlocal capturing
        capturing = True
        try:
            yield
        finally:
            capturing = False

    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", graph)
    with pytest.raises(VlpbenchError, match="could not capture") as info:
        variants._cuda_graph(forward, ())
    message = str(info.value)
    assert "operation not permitted when stream is capturing" in message and "more lines" not in message
    assert "accepted for this model: eager, jit-freeze, inductor, inductor-freeze" in message
