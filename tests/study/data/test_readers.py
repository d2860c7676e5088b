"""Readers of the real datasets, on tiny files written here in each format, good and malformed."""

import json

import pytest

from vlpbench.errors import VlpbenchError
from vlpbench.study.data import load_dataset, read_coco_karpathy, read_flickr30k_karpathy, read_nlvr2, read_vqav2


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def coco_image(split="test", **over):
    image = {
        "filepath": "val2014",
        "filename": "COCO_val2014_000000391895.jpg",
        "split": split,
        "cocoid": 391895,
        "sentences": [
            {"raw": "A man riding a bike.", "tokens": ["a", "man", "riding", "a", "bike"]},
            {"raw": "A cyclist on a road.", "tokens": ["a", "cyclist", "on", "a", "road"]},
        ],
    }
    image.update(over)
    return image


def test_coco_karpathy(tmp_path):
    path = write(
        tmp_path / "dataset_coco.json",
        {"images": [coco_image(), coco_image("train", filepath="train2014", filename="x.jpg", cocoid=7)]},
    )
    records = read_coco_karpathy(path)
    assert len(records) == 2
    r = records[0]
    assert r.image == "val2014/COCO_val2014_000000391895.jpg" and r.split == "test" and r.image_id == 391895
    assert r.captions == ("A man riding a bike.", "A cyclist on a road.") and r.tokens[1][1] == "cyclist"
    assert [x.image for x in read_coco_karpathy(path, split="train")] == ["train2014/x.jpg"]
    with pytest.raises(VlpbenchError, match="split 'dev'"):
        read_coco_karpathy(path, split="dev")


def test_flickr30k_karpathy_has_no_filepath(tmp_path):
    image = {
        "filename": "1000092795.jpg",
        "split": "val",
        "imgid": 3,
        "sentences": [{"raw": "Two young guys.", "tokens": ["two", "young", "guys"]}],
    }
    records = read_flickr30k_karpathy(write(tmp_path / "dataset_flickr30k.json", {"images": [image]}))
    assert records[0].image == "1000092795.jpg" and records[0].image_id == 3 and records[0].split == "val"


@pytest.mark.parametrize(
    "content, words",
    [
        ({"pictures": []}, ["top level", "'images'"]),
        ({"images": [coco_image(sentences=[{"raw": "x"}])]}, ["images[0].sentences[0]", "'tokens'"]),
        ({"images": [coco_image(filename=5)]}, ["images[0]", "'filename'", "expected str"]),
        ({"images": [coco_image(split="dev")]}, ["images[0]", "'split'", "'dev'"]),
        ({"images": [coco_image(), "not an object"]}, ["images[1]", "expected an object"]),
    ],
)
def test_karpathy_malformed(tmp_path, content, words):
    path = write(tmp_path / "dataset_coco.json", content)
    with pytest.raises(VlpbenchError) as info:
        read_coco_karpathy(path)
    for word in words + ["dataset_coco.json"]:
        assert word in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(VlpbenchError, match="nothere.json.*does not exist"):
        read_coco_karpathy(tmp_path / "nothere.json")
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(VlpbenchError, match="broken.json.*not valid JSON"):
        read_flickr30k_karpathy(tmp_path / "broken.json")


QUESTIONS = {
    "questions": [
        {"image_id": 1, "question": "What color is the cat?", "question_id": 10},
        {"image_id": 2, "question": "Is it raining?", "question_id": 20},
    ]
}


def annotation(qid, image_id, **over):
    ann = {
        "question_id": qid,
        "image_id": image_id,
        "answers": [{"answer": "black", "answer_confidence": "yes"}] * 10,
        "multiple_choice_answer": "black",
        "answer_type": "other",
    }
    ann.update(over)
    return ann


def test_vqav2_with_and_without_annotations(tmp_path):
    q = write(tmp_path / "q.json", QUESTIONS)
    a = write(
        tmp_path / "a.json",
        {"annotations": [annotation(10, 1), annotation(20, 2, multiple_choice_answer="no", answer_type="yes/no")]},
    )
    records = read_vqav2(q, a)
    assert [(r.question_id, r.image_id) for r in records] == [(10, 1), (20, 2)]
    assert records[0].question == "What color is the cat?" and records[0].answers == ("black",) * 10
    assert records[1].multiple_choice_answer == "no" and records[1].answer_type == "yes/no"
    test_split = read_vqav2(q)
    assert test_split[0].answers == () and test_split[0].multiple_choice_answer is None


def test_vqav2_malformed(tmp_path):
    q = write(tmp_path / "q.json", QUESTIONS)
    bad_q = write(tmp_path / "bad_q.json", {"questions": [{"image_id": 1, "question_id": 10}]})
    with pytest.raises(VlpbenchError, match=r"bad_q.json.*questions\[0\].*'question'"):
        read_vqav2(bad_q)
    with pytest.raises(VlpbenchError, match=r"a1.json.*annotations\[0\].answers\[0\].*'answer'"):
        read_vqav2(q, write(tmp_path / "a1.json", {"annotations": [annotation(10, 1, answers=[{"ans": "x"}])]}))
    with pytest.raises(VlpbenchError, match=r"a2.json.*'question_id' 20"):
        read_vqav2(q, write(tmp_path / "a2.json", {"annotations": [annotation(10, 1)]}))
    with pytest.raises(VlpbenchError, match=r"a3.json.*'image_id' is 9"):
        read_vqav2(q, write(tmp_path / "a3.json", {"annotations": [annotation(10, 9), annotation(20, 2)]}))
    with pytest.raises(VlpbenchError, match=r"a4.json.*'question_id' is bool"):
        read_vqav2(q, write(tmp_path / "a4.json", {"annotations": [annotation(True, 1)]}))


def nlvr2_line(**over):
    item = {
        "identifier": "dev-850-0-0",
        "sentence": "The left image contains two dogs.",
        "label": "True",
        "directory": 0,
    }
    item.update(over)
    return json.dumps(item)


def test_nlvr2(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(
        "\n".join(
            [
                nlvr2_line(),
                "",
                nlvr2_line(identifier="dev-850-0-1", label="False", left_image="a.png", right_image="b.png"),
            ]
        )
        + "\n"
    )
    records = read_nlvr2(path)
    assert len(records) == 2
    assert records[0].label is True and records[0].left_image == "dev-850-0-img0.png"
    assert records[0].right_image == "dev-850-0-img1.png"
    assert records[1].label is False and (records[1].left_image, records[1].right_image) == ("a.png", "b.png")


@pytest.mark.parametrize(
    "line, words",
    [
        (nlvr2_line(label="true"), ["line 2", "'label'", "'true'"]),
        (nlvr2_line(label=True), ["line 2", "'label'", "expected str"]),
        ('{"identifier": "dev-1-0-0", "sentence": "x"', ["line 2", "not valid JSON"]),
        (json.dumps({"sentence": "x", "label": "True"}), ["line 2", "'identifier'"]),
        (nlvr2_line(identifier="nodash"), ["line 2", "'identifier'", "nodash"]),
    ],
)
def test_nlvr2_malformed(tmp_path, line, words):
    path = tmp_path / "dev.json"
    path.write_text(nlvr2_line() + "\n" + line + "\n")
    with pytest.raises(VlpbenchError) as info:
        read_nlvr2(path)
    for word in words + ["dev.json"]:
        assert word in str(info.value)


def test_load_dataset_finds_files_under_root(tmp_path):
    write(tmp_path / "dataset_coco.json", {"images": [coco_image()]})
    assert load_dataset("coco", tmp_path)[0].split == "test"
    (tmp_path / "dev.json").write_text(nlvr2_line() + "\n")
    assert load_dataset("nlvr2", tmp_path)[0].identifier == "dev-850-0-0"
    with pytest.raises(VlpbenchError, match="lacks v2_OpenEnded_mscoco_val2014_questions.json"):
        load_dataset("vqav2", tmp_path)
    with pytest.raises(VlpbenchError, match="dataset 'imagenet'.*coco"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(VlpbenchError, match="not a directory"):
        load_dataset("coco", tmp_path / "nope")
