"""Task heads: output shapes, stages, ViLT-shaped classifiers, and errors on outputs that lack what they need."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from doubles import StageRecorder
from vlpbench.architectures.heads import retrieval_loss
from vlpbench.errors import VlpbenchError
from vlpbench.presets import load_all
from vlpbench.registry import HEAD
from vlpbench.stages import stage_names
from vlpbench.types import InteractionOutput

load_all()

D = 16
HEADS = ["itm", "mlm", "itc", "vqa", "nlvr2", "retrieval"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def fusion_output(b=3, text_len=5, visual=4, d=D, seed=0):
    g = gen(seed)
    return InteractionOutput(
        last_hidden_state=torch.randn(b, text_len + visual, d, generator=g),
        pooler_output=torch.randn(b, d, generator=g),
        text_len=text_len,
    )


def dual_output(b=3, d=D, seed=0):
    g = gen(seed)
    img = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    return InteractionOutput(image_embeds=img, text_embeds=txt, logits_per_image=img @ txt.t())


@pytest.mark.parametrize("name", HEADS)
def test_head_make_inputs_forward_and_stage(name):
    head = HEAD.build(name, tiny=True, context={"in_dim": D}).eval()
    rec = StageRecorder()
    with torch.no_grad():
        out = head(**head.make_inputs(2, generator=gen()), stage=rec)
    assert rec.names == stage_names(head) == [name]
    assert isinstance(out, dict) and all(isinstance(v, torch.Tensor) for v in out.values())


def test_head_output_shapes():
    fused, dual = fusion_output(), dual_output()
    build = lambda n, **kw: HEAD.build(n, tiny=True, context={"in_dim": D}, **kw).eval()  # noqa: E731
    with torch.no_grad():
        assert build("itm")(fused)["logits"].shape == (3, 2)
        assert build("mlm")(fused)["logits"].shape == (3, 5, HEAD.config("mlm", tiny=True).vocab_size)
        assert build("vqa")(fused)["logits"].shape == (3, 10)
        assert build("vqa", num_answers=7)(fused)["logits"].shape == (3, 7)
        assert build("nlvr2")(fused, pair=fusion_output(seed=1))["logits"].shape == (3, 2)
        assert build("retrieval")(fused)["scores"].shape == (3,)
        itc = build("itc")(dual)
    torch.testing.assert_close(itc["logits_per_text"], dual.logits_per_image.t())


def test_full_size_head_layouts_follow_vilt():
    with torch.device("meta"):
        vqa = HEAD.build("vqa", context={"in_dim": 768})
        nlvr2 = HEAD.build("nlvr2", context={"in_dim": 768})
        mlm = HEAD.build("mlm", context={"in_dim": 768})
    shapes = lambda seq: [tuple(m.weight.shape) for m in seq if isinstance(m, (nn.Linear, nn.LayerNorm))]  # noqa: E731
    assert shapes(vqa.classifier) == [(1536, 768), (1536,), (3129, 1536)]
    assert isinstance(vqa.classifier[2], nn.GELU)
    assert shapes(nlvr2.classifier) == [(1536, 1536), (1536,), (2, 1536)]
    assert mlm.decoder.weight.shape == (30522, 768)


def test_mlm_reads_only_the_text_part():
    head = HEAD.build("mlm", tiny=True, context={"in_dim": D}).eval()
    out = fusion_output(text_len=5, visual=4)
    changed = InteractionOutput(last_hidden_state=out.last_hidden_state.clone(), text_len=5)
    changed.last_hidden_state[:, 5:] += 100.0  # visual tokens must not matter
    with torch.no_grad():
        torch.testing.assert_close(head(out)["logits"], head(changed)["logits"])


def test_mlm_hidden_dim_override_for_a_narrower_text_stream():
    # ViLBERT: pooled width 1024 (in_dim) but the text stream is 768 wide.
    head = HEAD.build("mlm", tiny=True, hidden_dim=12, context={"in_dim": D})
    out = InteractionOutput(last_hidden_state=torch.randn(2, 4, 12), text_len=4)
    assert head(out)["logits"].shape == (2, 4, 100)
    with pytest.raises(VlpbenchError, match="hidden_dim"):
        HEAD.build("mlm", tiny=True, context={"in_dim": D})(out)


def test_nlvr2_uses_both_images():
    head = HEAD.build("nlvr2", tiny=True, context={"in_dim": D}).eval()
    a, b = fusion_output(seed=1), fusion_output(seed=2)
    with torch.no_grad():
        ab, ba = head(a, pair=b)["logits"], head(b, pair=a)["logits"]
        ref = head.classifier(torch.cat([a.pooler_output, b.pooler_output], -1))
    torch.testing.assert_close(ab, ref)
    assert not torch.allclose(ab, ba)


def test_retrieval_loss_is_cross_entropy_over_groups():
    scores = torch.randn(2 * 16, generator=gen())
    expected = F.cross_entropy(scores.view(2, 16), torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(retrieval_loss(scores, 15), expected)
    head = HEAD.build("retrieval", tiny=True, context={"in_dim": D})
    torch.testing.assert_close(head.loss(scores), expected)
    perfect = torch.tensor([50.0, 0.0, 0.0, 0.0])
    assert retrieval_loss(perfect, 3).item() < 1e-6
    with pytest.raises(VlpbenchError, match="retrieval scores"):
        retrieval_loss(torch.zeros(17), 15)


def test_head_errors_name_the_head_and_the_need():
    build = lambda n: HEAD.build(n, tiny=True, context={"in_dim": D})  # noqa: E731
    dual, fused = dual_output(), fusion_output()
    for name in ("itm", "vqa", "retrieval"):
        with pytest.raises(VlpbenchError, match=rf"{name}.*pooler_output"):
            build(name)(dual)
    with pytest.raises(VlpbenchError, match=r"mlm.*last_hidden_state"):
        build("mlm")(dual)
    with pytest.raises(VlpbenchError, match=r"itc.*logits_per_image"):
        build("itc")(fused)
    with pytest.raises(VlpbenchError, match=r"nlvr2.*pair"):
        build("nlvr2")(fused)
    with pytest.raises(VlpbenchError, match=r"nlvr2.*shape"):
        build("nlvr2")(fused, pair=fusion_output(b=2))
    with pytest.raises(VlpbenchError, match=r"itm.*width"):
        build("itm")(fusion_output(d=D + 1))
    with pytest.raises(VlpbenchError, match="in_dim"):
        HEAD.build("itm", context={"in_dim": 0})
    with pytest.raises(VlpbenchError, match="num_negatives"):
        HEAD.build("retrieval", num_negatives=0, context={"in_dim": D})
