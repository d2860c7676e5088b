"""Task-head presets: ITM, MLM, ITC, VQA, NLVR2 and retrieval, with the seed papers' sizes as reference facts."""

from __future__ import annotations

from vlpbench.architectures.heads import (
    ITCConfig,
    ITCHead,
    ITMConfig,
    ITMHead,
    MLMConfig,
    MLMHead,
    NLVR2Config,
    NLVR2Head,
    RetrievalConfig,
    RetrievalHead,
    VQAConfig,
    VQAHead,
)
from vlpbench.registry import HEAD

HEAD.register(
    "itm",
    ITMHead.from_config,
    ITMConfig(),
    description="image-text matching: Linear(d, 2) on pooler_output",
    paper={"source": "ViLT ITMHead"},
)
HEAD.register(
    "mlm",
    MLMHead.from_config,
    MLMConfig(),
    tiny=dict(vocab_size=100),
    description="BERT MLM transform (Linear-GELU-LayerNorm) + decoder to 30522 over the text tokens",
    paper={"vocab": 30522, "mask_prob": 0.15},
)
HEAD.register(
    "itc",
    ITCHead.from_config,
    ITCConfig(),
    description="image-text contrastive logits (per image and per text) from a dual encoder",
)
HEAD.register(
    "vqa",
    VQAHead.from_config,
    VQAConfig(),
    tiny=dict(num_answers=10),
    description="VQAv2 classifier Linear(d,2d)-LayerNorm-GELU-Linear(2d,3129) on pooler_output",
    paper={"answers": 3129, "source": "ViLT vqa_classifier"},
)
HEAD.register(
    "nlvr2",
    NLVR2Head.from_config,
    NLVR2Config(),
    description="NLVR2 pair head: two pooled outputs concatenated, Linear(2d,2d)-LayerNorm-GELU-Linear(2d,2)",
    paper={"source": "ViLT nlvr2_classifier"},
)
HEAD.register(
    "retrieval",
    RetrievalHead.from_config,
    RetrievalConfig(),
    description="retrieval rank score Linear(d, 1); loss = cross-entropy over 1 positive + 15 negatives",
    paper={"negatives": 15, "source": "ViLT rank_output"},
)
