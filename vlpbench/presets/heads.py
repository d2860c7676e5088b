"""Task-head presets: ITM, MLM, ITC, VQA, NLVR2 and retrieval, with the seed papers' sizes as reference facts."""

from __future__ import annotations

from vlpbench.architectures.heads import (ITCConfig, ITMConfig, MLMConfig, NLVR2Config, RetrievalConfig, VQAConfig,
                                          build_itc, build_itm, build_mlm, build_nlvr2, build_retrieval, build_vqa)
from vlpbench.registry import HEAD

HEAD.register("itm", build_itm, ITMConfig(), description="image-text matching: Linear(d, 2) on pooler_output",
              paper={"source": "ViLT ITMHead"})
HEAD.register("mlm", build_mlm, MLMConfig(), tiny=dict(vocab_size=100),
              description="BERT MLM transform (Linear-GELU-LayerNorm) + decoder to 30522 over the text tokens",
              paper={"vocab": 30522, "mask_prob": 0.15})
HEAD.register("itc", build_itc, ITCConfig(),
              description="image-text contrastive logits (per image and per text) from a dual encoder")
HEAD.register("vqa", build_vqa, VQAConfig(), tiny=dict(num_answers=10),
              description="VQAv2 classifier Linear(d,2d)-LayerNorm-GELU-Linear(2d,3129) on pooler_output",
              paper={"answers": 3129, "source": "ViLT vqa_classifier"})
HEAD.register("nlvr2", build_nlvr2, NLVR2Config(),
              description="NLVR2 pair head: two pooled outputs concatenated, Linear(2d,2d)-LayerNorm-GELU-Linear(2d,2)",
              paper={"source": "ViLT nlvr2_classifier"})
HEAD.register("retrieval", build_retrieval, RetrievalConfig(),
              description="retrieval rank score Linear(d, 1); loss = cross-entropy over 1 positive + 15 negatives",
              paper={"negatives": 15, "source": "ViLT rank_output"})
