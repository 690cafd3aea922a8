"""``luse eval``: table and JSON output, one-line errors, and the real console script."""

import json
import math
import os
import subprocess
import sys

import pytest

from luse.cli.main import main

PAIRS = [
    ("一个女孩在梳头。", "一个女孩在给头发做发型。", 4),
    ("一群男人在海滩上踢足球。", "一群男孩在海滩上踢足球。", 3),
    ("一个人正在切黄瓜。", "一个人在切黄瓜。", 5),
    ("一个人在弹竖琴。", "一个男人在玩键盘。", 1),
    ("一个女人在跳舞。", "一个男人在说话。", 0),
    ("飞机要起飞了。", "一架飞机正在起飞。", 4),
    ("一只猫在玩毛线球。", "一只狗在草地上跑。", 1),
    ("孩子们在公园里玩耍。", "小朋友在公园玩。", 4),
]


@pytest.fixture
def sts_files(tmp_path):
    tsv = tmp_path / "stsb.tsv"
    tsv.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in PAIRS), encoding="utf-8")
    jsonl = tmp_path / "sohu.jsonl"
    jsonl.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "label": s}, ensure_ascii=False) + "\n"
                             for a, b, s in PAIRS[::-1]), encoding="utf-8")
    return str(tsv), str(jsonl)


def test_eval_json_is_one_object_keyed_by_path_as_given(tiny_bert, sts_files, capsys):
    code = main(["eval", str(tiny_bert), "--sts", *sts_files, "--pooling", "pooler", "mean",
                 "--whiten-dims", "8", "--batch-size", "4", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    results = json.loads(out)  # the whole of stdout is one JSON document
    assert list(results) == list(sts_files)
    for row in results.values():
        assert list(row) == ["pooler", "pooler+whiten", "pooler+whiten-8", "mean", "mean+whiten", "mean+whiten-8"]
        assert all(isinstance(v, float) and math.isfinite(v) for v in row.values())


def test_eval_prints_the_table_with_and_without_whitening(tiny_bert, sts_files, capsys):
    assert main(["eval", str(tiny_bert), "--sts", sts_files[0]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["file", "pooler", "pooler+whiten"]
    assert lines[2].startswith(f"| {sts_files[0]} ")
    assert len(lines) == 3


def test_bad_sts_file_is_one_line_and_exit_code_2(tiny_bert, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("甲\t乙\t1\nfoo\tbar\n", encoding="utf-8")
    assert main(["eval", str(tiny_bert), "--sts", str(bad), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == (
        f"luse: error: {bad}:2: expected 's1<TAB>s2<TAB>score' with a numeric score, got 'foo\\tbar'")
    assert "Traceback" not in captured.err


def test_missing_model_is_one_line_and_exit_code_2(tmp_path, sts_files, capsys):
    assert main(["eval", str(tmp_path / "no-model"), "--sts", sts_files[0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"luse: error: {tmp_path / 'no-model'}: expected a model directory or a hub model name, "
                       "got 'no such directory'")


@pytest.mark.parametrize("target, says", [
    ("run", ["a training run's directory", "the model is {run}/final or {run}/best"]),
    ("unfinished", ["a training run's directory", "no {run}/final or best export yet"]),
    ("checkpoint", ["a training checkpoint (for resume=...)", "the model is {run}/final or {run}/best"]),
    ("empty", ["an empty directory"]),
    ("nonexistent", ["no such directory"]),
])
def test_eval_of_a_directory_without_a_model_says_what_it_is(tmp_path, tiny_bert, sts_files, capsys, target, says):
    import shutil

    run = tmp_path / "runs" / "x"
    (run / "checkpoints" / "step-00000002").mkdir(parents=True)
    (run / "checkpoints" / "step-00000002" / "optimizer.bin").write_bytes(b"state")
    (run / "config.yaml").write_text("max_steps: 2\n")
    if target != "unfinished":
        for export in ("final", "best"):
            shutil.copytree(tiny_bert, run / export)
    (tmp_path / "empty").mkdir()
    model = {"run": run, "unfinished": run, "checkpoint": run / "checkpoints" / "step-00000002",
             "empty": tmp_path / "empty", "nonexistent": tmp_path / "runs" / "y" / "final"}[target]
    assert main(["eval", str(model), "--sts", sts_files[0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"luse: error: {model}: expected a model directory"), err
    for fragment in says:
        assert fragment.format(run=run) in err[0], err[0]
    assert "sentencepiece" not in err[0]


def test_pooling_that_does_not_fit_the_model_is_an_error(tiny_roformer, sts_files, capsys):
    assert main(["eval", str(tiny_roformer), "--sts", sts_files[0]]) == 2
    assert "use pooling=cls" in capsys.readouterr().err.splitlines()[-1]
    assert main(["eval", str(tiny_roformer), "--sts", sts_files[0], "--pooling", "cls", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)[sts_files[0]]) == ["cls", "cls+whiten"]


@pytest.mark.parametrize("argv", [["eval"], ["eval", "model"], ["eval", "m", "--sts", "a.tsv", "--pooling", "max"],
                                  ["eval", "m", "--sts", "a.tsv", "--whiten-dims", "0"], ["nope"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage: luse" in capsys.readouterr().err


def test_help_and_no_command(capsys):
    assert main(["--help"]) == 0
    assert "eval" in capsys.readouterr().out
    assert main([]) == 2
    assert "usage: luse" in capsys.readouterr().err


def test_console_script_keeps_stdout_for_json(tiny_bert, sts_files):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "luse.cli.main", "eval", str(tiny_bert), "--sts", sts_files[1], "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)[sts_files[1]]) == ["pooler", "pooler+whiten"]
    assert "loaded" in done.stderr  # logging goes to stderr
