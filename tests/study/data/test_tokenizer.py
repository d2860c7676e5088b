"""Word tokenizer: specials, padding, round trip, save/load."""

import json

import pytest
import torch

from vlpbench.errors import VlpbenchError
from vlpbench.study.data import SPECIAL_TOKENS, SceneConfig, WordTokenizer, vocabulary


@pytest.fixture
def tok():
    return WordTokenizer.from_vocabulary(vocabulary(SceneConfig(canvas=64)), max_length=16)


def test_special_tokens_come_first(tok):
    assert tok.id_to_token[:5] == list(SPECIAL_TOKENS)
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.unk_token_id) == (
        0,
        1,
        2,
        3,
        4,
    )


def test_encode_layout_and_round_trip(tok):
    text = "is the red object left of the blue object ?"
    enc = tok.encode(text)
    n = len(text.split())
    assert len(enc["input_ids"]) == 16 and enc["input_ids"][0] == tok.cls_token_id
    assert enc["input_ids"][n + 1] == tok.sep_token_id and enc["input_ids"][n + 2 :] == [0] * (16 - n - 2)
    assert enc["attention_mask"] == [1] * (n + 2) + [0] * (16 - n - 2)
    assert tok.decode(enc["input_ids"]) == text
    assert tok.decode(enc["input_ids"], skip_special_tokens=False).startswith("[CLS] is the red")


def test_case_punctuation_and_unknown_words(tok):
    assert tok.decode(tok.encode("The RED circle, left of?")["input_ids"]) == "the red circle , left of ?"
    ids = tok.encode("a purple dragon")["input_ids"]  # purple is not in the default six colours
    assert ids[1:4] == [tok.token_to_id["a"], tok.unk_token_id, tok.unk_token_id]
    assert tok.count_unknown("a purple dragon") == 2


def test_long_text_is_cut_but_keeps_sep(tok):
    enc = tok.encode("red " * 40)
    assert len(enc["input_ids"]) == 16 and enc["input_ids"][-1] == tok.sep_token_id
    assert sum(enc["attention_mask"]) == 16


def test_batch_call_gives_tensors(tok):
    out = tok(["a red circle", "the blue square is above the green triangle"])
    assert out["input_ids"].shape == (2, 16) and out["input_ids"].dtype == torch.long
    assert out["attention_mask"].sum(dim=1).tolist() == [5, 10]


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    again = WordTokenizer.load(path)
    assert again.id_to_token == tok.id_to_token and again.max_length == 16
    assert again.encode("a red circle") == tok.encode("a red circle")


def test_bad_inputs(tok, tmp_path):
    with pytest.raises(VlpbenchError, match="max_length"):
        WordTokenizer(["a"], max_length=2)
    with pytest.raises(VlpbenchError, match="does not exist"):
        WordTokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VlpbenchError, match="not JSON"):
        WordTokenizer.load(tmp_path / "bad.json")
    (tmp_path / "nospecials.json").write_text(json.dumps({"tokens": ["a", "b"]}))
    with pytest.raises(VlpbenchError, match="tokens"):
        WordTokenizer.load(tmp_path / "nospecials.json")
    with pytest.raises(VlpbenchError, match="token id"):
        tok.decode([tok.vocab_size])
