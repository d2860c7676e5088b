"""The data layer of the accuracy axis: generated relational scenes, their text, tasks, metrics, readers.

Typical use by a trainer::

    from torch.utils.data import DataLoader
    from vlpbench.study.data import DatasetConfig, SceneConfig, SyntheticData, collate, qa_accuracy

    data = SyntheticData(DatasetConfig(scene=SceneConfig(canvas=64), n_train=2000))
    loader = DataLoader(data.qa("train"), batch_size=64, shuffle=True, collate_fn=collate)
"""

from vlpbench.study.data.dataset import (
    DETECTION_LABELS,
    SPLITS,
    DatasetConfig,
    DetectionDataset,
    MatchingDataset,
    MatchItem,
    QADataset,
    RetrievalDataset,
    RetrievalGallery,
    SceneSplit,
    SyntheticData,
    collate,
    degenerate_warnings,
    format_statistics,
    split_statistics,
)
from vlpbench.study.data.language import (
    CAPTION_TEMPLATES,
    NEGATIVE_KINDS,
    NON_RELATIONAL_TYPES,
    QUESTION_TYPES,
    RELATIONAL_TYPES,
    Question,
    Statement,
    answer_vocabulary,
    evaluate,
    vocabulary,
)
from vlpbench.study.data.metrics import matching_accuracy, pairwise_matching, qa_accuracy, retrieval_recall
from vlpbench.study.data.readers import (
    DATASET_FILES,
    CaptionRecord,
    NLVR2Record,
    VQARecord,
    load_dataset,
    read_coco_karpathy,
    read_flickr30k_karpathy,
    read_karpathy,
    read_nlvr2,
    read_vqav2,
)
from vlpbench.study.data.scenes import (
    PALETTE,
    SHAPE_NAMES,
    Scene,
    SceneConfig,
    SceneObject,
    check_scene,
    generate_scene,
)
from vlpbench.study.data.tokenizer import SPECIAL_TOKENS, WordTokenizer

__all__ = [
    "CAPTION_TEMPLATES",
    "DATASET_FILES",
    "DETECTION_LABELS",
    "NEGATIVE_KINDS",
    "NON_RELATIONAL_TYPES",
    "PALETTE",
    "QUESTION_TYPES",
    "RELATIONAL_TYPES",
    "SHAPE_NAMES",
    "SPECIAL_TOKENS",
    "SPLITS",
    "CaptionRecord",
    "DatasetConfig",
    "DetectionDataset",
    "MatchItem",
    "MatchingDataset",
    "NLVR2Record",
    "QADataset",
    "Question",
    "RetrievalDataset",
    "RetrievalGallery",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "SceneSplit",
    "Statement",
    "SyntheticData",
    "VQARecord",
    "WordTokenizer",
    "answer_vocabulary",
    "check_scene",
    "collate",
    "degenerate_warnings",
    "evaluate",
    "format_statistics",
    "generate_scene",
    "load_dataset",
    "matching_accuracy",
    "pairwise_matching",
    "qa_accuracy",
    "read_coco_karpathy",
    "read_flickr30k_karpathy",
    "read_karpathy",
    "read_nlvr2",
    "read_vqav2",
    "retrieval_recall",
    "split_statistics",
    "vocabulary",
]
