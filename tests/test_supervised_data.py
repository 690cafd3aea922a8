"""Strict readers for supervised data: triplets and scored pairs in JSON lines, TSV and CSV."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from luse.data import read_pairs, read_triplets
from luse.errors import InputError


def write(path: Path, text: str | bytes) -> Path:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def jsonl(*records: dict) -> str:
    return "\n".join(json.dumps(record, ensure_ascii=False) for record in records) + "\n"


def assert_one_line_error(error: pytest.ExceptionInfo, place: str, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{place}: expected "), message
    for fragment in fragments:
        assert fragment in message, message


# --- triplets ------------------------------------------------------------------------------

def test_read_triplets_jsonl_with_every_key_alias(tmp_path):
    path = write(tmp_path / "t.jsonl.gz", jsonl(
        {"anchor": "锚", "positive": "正", "negative": "负", "extra": 1},
        {"sentence1": "句一", "sentence2": "句二", "hard_negative": "难负"},
        {"sent0": "s0", "sent1": "s1", "hard_neg": "hn"},
        {"query": "问", "pos": "答", "neg": "错"},
    ) + "\n")
    assert list(read_triplets(path)) == [("锚", "正", "负"), ("句一", "句二", "难负"), ("s0", "s1", "hn"),
                                         ("问", "答", "错")]


def test_read_triplets_tsv_with_and_without_header(tmp_path):
    plain = write(tmp_path / "t.tsv", '一个人在跑步\t有人在运动\t"没有人"在动\r\n\n猫\t狗\t鱼')
    assert list(read_triplets(plain)) == [("一个人在跑步", "有人在运动", '"没有人"在动'), ("猫", "狗", "鱼")]
    headed = write(tmp_path / "h.tsv", "anchor\tpositive\tnegative\n甲\t乙\t丙\n")
    assert list(read_triplets(headed)) == [("甲", "乙", "丙")]


def test_read_triplets_csv_with_simcse_header_and_quoting(tmp_path):
    path = write(tmp_path / "nli_for_simcse.csv",
                 'sent0,sent1,hard_neg\n"他说,好","多行\n字段",丙\n甲,"引号""里""",丁\n')
    assert list(read_triplets(path)) == [("他说,好", "多行\n字段", "丙"), ("甲", '引号"里"', "丁")]


@pytest.mark.parametrize("name, content, line, fragments", [
    ("bad.jsonl", '{"anchor": "a", "positive": "b", "negative": "c"}\n{"anchor": "a", "positive": "b"}\n', 2,
     ["anchor/positive/negative or sentence1/sentence2/hard_negative", "got '{\"anchor\""]),
    ("bad.jsonl", '{"anchor": "a", "positive": "b", "negative": ["c"]}\n', 1, ["string fields"]),
    ("bad.jsonl", "{not json\n", 1, ["a JSON object"]),
    ("bad.jsonl", '["a", "b", "c"]\n', 1, ["a JSON object"]),
    ("bad.tsv", "a\tb\tc\na\tb\n", 2, ["3 tab-separated columns (anchor<TAB>positive<TAB>negative)",
                                       "got 'a\\tb'"]),
    ("bad.tsv", "a\t \tc\n", 1, ["3 tab-separated columns"]),
    ("bad.csv", "x,y,z\na,b,c\n", 1, ["a header naming the columns anchor/positive/negative", "got 'x,y,z'"]),
    ("bad.csv", "anchor,positive,negative\na,b,c\n\na,b\n", 4, ["3 comma-separated fields"]),
    ("bad.csv", 'anchor,positive,negative\na,"b"x,c\n', 2, ["valid CSV"]),
])
def test_read_triplets_malformed_line_is_a_one_line_error(tmp_path, name, content, line, fragments):
    path = write(tmp_path / name, content)
    with pytest.raises(InputError) as error:
        list(read_triplets(path))
    assert_one_line_error(error, f"{path}:{line}", *fragments)
    assert error.value.line == line


def test_read_triplets_invalid_utf8_is_an_error(tmp_path):
    path = write(tmp_path / "t.tsv", "甲\t乙\t丙\n".encode() + b"\xff\tb\tc\n")
    with pytest.raises(InputError) as error:
        list(read_triplets(path))
    assert_one_line_error(error, f"{path}:2", "UTF-8 text", "\\xff")


def test_supervised_readers_check_the_path_when_called(tmp_path):
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'missing.jsonl'}: expected an existing file")):
        read_triplets(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match=r"data\.txt: expected a \.jsonl, \.json, \.tsv or \.csv file"):
        read_pairs(write(tmp_path / "data.txt", "a\tb\t1\n"))


# --- pairs ---------------------------------------------------------------------------------

def test_read_pairs_jsonl_scores_labels_and_aliases(tmp_path):
    path = write(tmp_path / "p.json", jsonl(
        {"sentence1": "花呗怎么还款", "sentence2": "花呗如何还钱", "label": "1"},
        {"text1": "甲", "text2": "乙", "score": 3.5},
        {"text_a": "丙", "text_b": "丁", "similarity": 0},
        {"s1": "戊", "s2": "己", "score": "4.2", "label": "ignored because score comes first"},
    ))
    assert list(read_pairs(path)) == [("花呗怎么还款", "花呗如何还钱", 1.0), ("甲", "乙", 3.5), ("丙", "丁", 0.0),
                                      ("戊", "己", 4.2)]


def test_read_pairs_tsv_sts_layout_with_optional_header(tmp_path):
    path = write(tmp_path / "sts.tsv.gz", "sentence1\tsentence2\tscore\n一个女人在跳舞\t一个人在跳舞\t4\n甲\t乙\t0.5\n")
    assert list(read_pairs(path)) == [("一个女人在跳舞", "一个人在跳舞", 4.0), ("甲", "乙", 0.5)]


def test_read_pairs_csv_with_header(tmp_path):
    path = write(tmp_path / "p.csv", 'id,text_a,text_b,label\n1,"你好,世界",你好,1\n2,甲,乙,0\n')
    assert list(read_pairs(path)) == [("你好,世界", "你好", 1.0), ("甲", "乙", 0.0)]


@pytest.mark.parametrize("name, content, line, fragments", [
    ("p.tsv", "a\tb\t1\na\tb\thigh\n", 2, ["sentence1<TAB>sentence2<TAB>score) with a numeric score",
                                             "got 'a\\tb\\thigh'"]),
    ("p.tsv", "a\tb\tnan\n", 1, ["numeric score"]),
    ("p.tsv", "a\tb\n", 1, ["3 tab-separated columns"]),
    ("p.jsonl", '{"sentence1": "a", "sentence2": "b"}\n', 1, ["and a numeric score/label/similarity"]),
    ("p.jsonl", '{"sentence1": "a", "sentence2": "b", "label": true}\n', 1, ["numeric"]),
    ("p.jsonl", '{"sentence1": "a", "label": 1}\n', 1, ["sentence1/sentence2 or text1/text2"]),
    ("p.csv", "sentence1,sentence2\na,b\n", 1, ["and score/label/similarity"]),
    ("p.csv", "sentence1,sentence2,label\na,b,x\n", 2, ["with a numeric score"]),
])
def test_read_pairs_malformed_line_is_a_one_line_error(tmp_path, name, content, line, fragments):
    path = write(tmp_path / name, content)
    with pytest.raises(InputError) as error:
        list(read_pairs(path))
    assert_one_line_error(error, f"{path}:{line}", *fragments)


def test_read_pairs_streams_lazily(tmp_path):
    path = write(tmp_path / "p.tsv", "a\tb\t1\n" + "broken line\n")
    pairs = read_pairs(path)
    assert next(pairs) == ("a", "b", 1.0)  # the bad second line only fails when reached
    with pytest.raises(InputError):
        next(pairs)


# --- another reader's format: refused in one line naming the recipe that reads it ----------

def _refusals(reader, *cases):
    return [pytest.param(reader, *case, id=f"{reader}-{case[0]}-{n}") for n, case in enumerate(cases)]


@pytest.mark.parametrize("reader, name, content, recipe", [
    *_refusals("read_triplets",
               ("sts.tsv", "一个女人在跳舞\t一个人在跳舞\t5\n", "recipes/cosent.py"),  # 5 would be the negative
               ("sts.tsv", "甲\t乙\t0.5\n", "recipes/cosent.py"),
               ("lcqmc.jsonl", '{"sentence1": "花呗怎么还款", "sentence2": "花呗如何还钱", "label": 1}\n',
                "recipes/cosent.py"),
               ("p.jsonl", '{"text1": "甲", "text2": "乙", "score": 0.8}\n', "recipes/cosent.py"),
               ("p.csv", "sentence1,sentence2,label\n甲,乙,1\n", "recipes/cosent.py"),
               ("p.tsv", "甲\t乙\n", "recipes/roformer_sim.py"),
               ("p.jsonl", '{"text1": "甲", "text2": "乙"}\n', "recipes/roformer_sim.py")),
    *_refusals("read_pairs",
               ("t.tsv", "一个人在跑步\t有人在运动\t没有人在动\n", "recipes/simcse_sup.py"),
               ("t.jsonl", '{"anchor": "甲", "positive": "乙", "negative": "丙"}\n', "recipes/simcse_sup.py"),
               ("t.jsonl", '{"anchor": "甲", "positive": "乙", "negative": "丙", "score": 1}\n',
                "recipes/simcse_sup.py"),
               ("t.csv", "sent0,sent1,hard_neg\n甲,乙,丙\n", "recipes/simcse_sup.py"),
               ("p.tsv", "甲\t乙\n", "recipes/roformer_sim.py"),
               ("p.jsonl", '{"sentence1": "甲", "sentence2": "乙"}\n', "recipes/roformer_sim.py")),
    *_refusals("read_similar_pairs",
               ("lcqmc.jsonl", '{"sentence1": "甲", "sentence2": "乙", "label": 0}\n', "recipes/cosent.py"),
               ("p.csv", "text1,text2,label\n甲,乙,0\n", "recipes/cosent.py"),
               ("sts.tsv", "甲\t乙\t0\n", "recipes/cosent.py"),
               ("t.tsv", "甲\t乙\t丙\n", "recipes/simcse_sup.py")),
])
def test_a_reader_refuses_another_recipes_format_naming_that_recipe(tmp_path, reader, name, content, recipe):
    from luse.data import supervised
    path = write(tmp_path / name, content)
    with pytest.raises(InputError) as error:
        list(getattr(supervised, reader)(path))
    assert "\n" not in str(error.value) and recipe in str(error.value), str(error.value)
    assert str(error.value).startswith(f"{path}:"), str(error.value)


def test_similar_pairs_keep_mined_scores_and_triplets_keep_extra_keys(tmp_path):
    from luse.data.supervised import read_similar_pairs
    mined = write(tmp_path / "mined.jsonl", '{"text1": "甲", "text2": "乙", "score": 0.8, "scheme": 2}\n')
    assert list(read_similar_pairs(mined)) == [("甲", "乙")]
    mined_triplets = write(tmp_path / "t.jsonl", '{"anchor": "甲", "positive": "乙", "negative": "丙", "score": 1}\n')
    assert list(read_triplets(mined_triplets)) == [("甲", "乙", "丙")]
