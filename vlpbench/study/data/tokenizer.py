"""A word-level tokenizer over the generator's closed vocabulary; nothing is downloaded.

Special tokens come first: [PAD]=0, [CLS]=1, [SEP]=2, [MASK]=3, [UNK]=4. ``encode`` gives
``[CLS] words... [SEP]`` padded with [PAD] to ``max_length``, with ``attention_mask`` 1 on real tokens,
the layout BERT-style text embedders expect.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence

import torch

from vlpbench.errors import VlpbenchError, bad_value

PAD, CLS, SEP, MASK, UNK = "[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"
SPECIAL_TOKENS = (PAD, CLS, SEP, MASK, UNK)
_WORD = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")


def split_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words and single punctuation marks."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Maps words to ids and back. Build with :meth:`from_vocabulary` or :meth:`load`."""

    def __init__(self, words: Sequence[str], max_length: int = 40):
        if not isinstance(max_length, int) or max_length < 3:
            raise bad_value("max_length", max_length, "an integer >= 3 ([CLS], one word, [SEP])")
        tokens = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
        if len(set(tokens)) != len(tokens):
            raise VlpbenchError("tokenizer vocabulary has repeated words")
        self.id_to_token: list[str] = tokens
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.max_length = max_length  # fixed length of every encoded sequence

    @classmethod
    def from_vocabulary(cls, words: Iterable[str], max_length: int = 40) -> WordTokenizer:
        """Tokenizer over ``words`` (e.g. :func:`vlpbench.study.data.language.vocabulary`), sorted for stable ids."""
        return cls(sorted(set(words)), max_length)

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    @property
    def pad_token_id(self) -> int:
        return 0

    @property
    def cls_token_id(self) -> int:
        return self.token_to_id[CLS]

    @property
    def sep_token_id(self) -> int:
        return self.token_to_id[SEP]

    @property
    def mask_token_id(self) -> int:
        return self.token_to_id[MASK]

    @property
    def unk_token_id(self) -> int:
        return self.token_to_id[UNK]

    def tokenize(self, text: str) -> list[int]:
        """Ids of the words of ``text`` without specials; unknown words become [UNK]."""
        unk = self.unk_token_id
        return [self.token_to_id.get(w, unk) for w in split_words(text)]

    def encode(self, text: str, max_length: int | None = None) -> dict[str, list[int]]:
        """``{"input_ids", "attention_mask"}`` of length ``max_length``; long texts are cut before [SEP]."""
        length = self.max_length if max_length is None else max_length
        ids = [self.cls_token_id] + self.tokenize(text)[: length - 2] + [self.sep_token_id]
        mask = [1] * len(ids)
        pad = length - len(ids)
        return {"input_ids": ids + [self.pad_token_id] * pad, "attention_mask": mask + [0] * pad}

    def __call__(self, texts: str | Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Encode one text or a batch: ``input_ids`` / ``attention_mask`` as int64 [B, L]."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        encoded = [self.encode(t, max_length) for t in batch]
        return {
            key: torch.tensor([e[key] for e in encoded], dtype=torch.long) for key in ("input_ids", "attention_mask")
        }

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Words of ``ids`` joined by spaces; specials dropped unless ``skip_special_tokens`` is False."""
        words = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise bad_value("token id", i, f"0 to {self.vocab_size - 1}")
            token = self.id_to_token[i]
            if skip_special_tokens and token in SPECIAL_TOKENS:
                continue
            words.append(token)
        return " ".join(words)

    def count_unknown(self, text: str) -> int:
        """How many words of ``text`` are not in the vocabulary."""
        return sum(w not in self.token_to_id for w in split_words(text))

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary and max length as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(
                {"format": "vlpbench-word-tokenizer", "max_length": self.max_length, "tokens": self.id_to_token},
                f,
                indent=0,
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        """Read a tokenizer written by :meth:`save`; a missing or malformed file raises VlpbenchError."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise VlpbenchError(f"tokenizer file {str(path)!r} does not exist") from None
        except json.JSONDecodeError as e:
            raise VlpbenchError(f"tokenizer file {str(path)!r} is not JSON: {e}") from None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or list(tokens[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise VlpbenchError(f"tokenizer file {str(path)!r}: field 'tokens' must list {SPECIAL_TOKENS} first")
        return cls(tokens[len(SPECIAL_TOKENS) :], int(data.get("max_length", 40)))
