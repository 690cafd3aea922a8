"""STS file readers: every accepted layout, and one-line errors that name the file and line."""

import json
import re

import pytest

from luse.data.sts import StsSet, read_sts
from luse.errors import InputError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tab_separated_pairs(tmp_path):
    path = write(tmp_path / "stsb.tsv", "一个女孩在梳头。\t一个女孩在给头发做发型。\t2\n\n他在弹琴。\t他在唱歌。\t0.5\n")
    sts = read_sts(path)
    assert sts == StsSet(str(path), ["一个女孩在梳头。", "他在弹琴。"], ["一个女孩在给头发做发型。", "他在唱歌。"],
                         [2.0, 0.5])
    assert len(sts) == 2


def test_txt_is_tab_separated_and_binary_labels_work(tmp_path):
    sts = read_sts(write(tmp_path / "lcqmc.txt", "喜欢打篮球的男生喜欢什么样的女生\t爱打篮球的男生喜欢什么样的女生\t1\n"
                                                 "我手机丢了，我想换个手机\t我想买个新手机，求推荐\t0\n"))
    assert sts.scores == [1.0, 0.0]


def test_tab_file_with_header_and_extra_columns(tmp_path):
    text = "id\ttext_a\ttext_b\tlabel\n1\t今天天气好\t天气不错\t1\n2\t我要退款\t怎么还款\t0\n"
    sts = read_sts(write(tmp_path / "atec.tsv", text))
    assert sts.sentences1 == ["今天天气好", "我要退款"]
    assert sts.sentences2 == ["天气不错", "怎么还款"]
    assert sts.scores == [1.0, 0.0]


def test_tab_fields_keep_quotes_and_crlf_is_handled(tmp_path):
    path = tmp_path / "quotes.tsv"
    path.write_bytes('他说"你好"\t他说：你好\t4\r\n'.encode())
    sts = read_sts(path)
    assert sts.sentences1 == ['他说"你好"'] and sts.scores == [4.0]


def test_line_separator_characters_inside_a_sentence_do_not_split_the_line(tmp_path):
    sts = read_sts(write(tmp_path / "odd.tsv", "第一句\u2028续行\t第二句\t3\n"))
    assert sts.sentences1 == ["第一句\u2028续行"]


def test_csv_with_header_in_any_column_order(tmp_path):
    text = 'label,sentence2,sentence1\n1,"借款, 还款",怎么还款\n0,我的额度,为什么不能借钱\n'
    sts = read_sts(write(tmp_path / "bq.csv", text))
    assert sts.sentences1 == ["怎么还款", "为什么不能借钱"]
    assert sts.sentences2 == ["借款, 还款", "我的额度"]
    assert sts.scores == [1.0, 0.0]


@pytest.mark.parametrize("header", ["s1,s2,score", "text_a,text_b,label", "Sentence1,Sentence2,Similarity"])
def test_csv_header_aliases(tmp_path, header):
    sts = read_sts(write(tmp_path / "pairs.csv", f"{header}\n甲,乙,3.5\n"))
    assert (sts.sentences1, sts.sentences2, sts.scores) == (["甲"], ["乙"], [3.5])


def test_csv_without_header_and_with_a_bom(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_bytes("\ufeff甲,乙,1\n丙,丁,0\n".encode())
    assert read_sts(path).sentences1 == ["甲", "丙"]


def test_jsonl_with_label_or_score(tmp_path):
    lines = [{"sentence1": "延迟退休来了", "sentence2": "延迟退休真的来了", "label": 5},
             {"sentence1": "体坛联播", "sentence2": "C罗粉丝数破5亿", "score": "3"}]
    path = write(tmp_path / "sohu.jsonl", "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    sts = read_sts(path)
    assert sts.sentences2 == ["延迟退休真的来了", "C罗粉丝数破5亿"]
    assert sts.scores == [5.0, 3.0]


def test_json_array(tmp_path):
    items = [{"sentence1": "甲", "sentence2": "乙", "label": 1}, {"sentence1": "丙", "sentence2": "丁", "label": 0}]
    sts = read_sts(write(tmp_path / "pairs.json", json.dumps(items, ensure_ascii=False)))
    assert sts.scores == [1.0, 0.0]


@pytest.mark.parametrize("text, expected", [
    ('{"sentence1": "甲", "sentence2": "乙", "label": 2}\n', 2.0),
    ("甲\t乙\t4\n", 4.0),
    ("sentence1,sentence2,label\n甲,乙,1\n", 1.0),
])
def test_unknown_extension_is_sniffed_from_content(tmp_path, text, expected):
    assert read_sts(write(tmp_path / "pairs.data", text)).scores == [expected]


def test_name_is_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.tsv", "甲\t乙\t1\n")
    assert read_sts("a.tsv").name == "a.tsv"


def test_bad_tab_line_names_file_line_and_form(tmp_path):
    path = write(tmp_path / "x.tsv", "甲\t乙\t1\n\nfoo\tbar\n")
    with pytest.raises(InputError) as info:
        read_sts(path)
    message = str(info.value)
    assert message == f"{path}:3: expected 's1<TAB>s2<TAB>score' with a numeric score, got 'foo\\tbar'"
    assert "\n" not in message
    assert info.value.line == 3


@pytest.mark.parametrize("line", ["甲\t乙\thigh", "甲\t乙\t1\t2", "甲\t乙\tnan", "\t乙\t1"])
def test_other_bad_tab_lines(tmp_path, line):
    path = write(tmp_path / "x.tsv", f"甲\t乙\t1\n{line}\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:2: expected 's1<TAB>s2<TAB>score' with "):
        read_sts(path)


def test_bad_csv_row_after_header(tmp_path):
    path = write(tmp_path / "x.csv", "sentence1,sentence2,label\n甲,乙,1\n甲,乙\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:3: expected 3 comma-separated fields as in the header"):
        read_sts(path)


def test_csv_line_numbers_count_quoted_newlines(tmp_path):
    path = write(tmp_path / "x.csv", 'sentence1,sentence2,label\n"多行\n句子",乙,1\n甲,乙,bad\n')
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:4: "):
        read_sts(path)


@pytest.mark.parametrize("line", ['{"sentence1": "甲", "label": 1}', "not json", '["甲", "乙", 1]',
                                  '{"sentence1": "甲", "sentence2": "乙", "label": "x"}',
                                  '{"sentence1": "甲", "sentence2": "乙", "label": true}'])
def test_bad_jsonl_line(tmp_path, line):
    path = write(tmp_path / "x.jsonl", '{"sentence1": "甲", "sentence2": "乙", "label": 1}\n' + line + "\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:2: expected a JSON object with sentence1, sentence2 and a numeric"):
        read_sts(path)


def test_bad_json_array_item_names_its_index(tmp_path):
    path = write(tmp_path / "x.json", '[{"sentence1": "甲", "sentence2": "乙", "label": 1}, {"text": "甲"}]')
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}\[1\]: expected a JSON object"):
        read_sts(path)


@pytest.mark.parametrize("name, text", [("empty.tsv", ""), ("blank.tsv", "\n\n"), ("header.csv", "s1,s2,label\n"),
                                        ("empty.jsonl", "\n")])
def test_empty_files_are_errors(tmp_path, name, text):
    path = write(tmp_path / name, text)
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: expected at least one sentence pair"):
        read_sts(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        read_sts("/nonexistent/sts.tsv")


def test_sts_set_checks_lengths_and_lists_unique_sentences():
    with pytest.raises(ValueError, match="same length"):
        StsSet("x", ["a"], ["b", "c"], [1.0])
    assert StsSet("x", ["a", "b"], ["b", "c"], [1.0, 0.0]).unique_sentences() == ["a", "b", "c"]
