"""benchmarks/domains.py: a luse row whose run is killed from outside resumes instead of losing the domain."""

import json
import shutil
import subprocess

import pytest
from conftest import benchmark_module

SENTENCES = ["今天天气很好我们去公园散步", "他在图书馆里安静地看书", "这家餐厅的菜味道非常不错", "我明天要坐火车去北京出差",
             "孩子们在操场上踢足球", "她每天早上都喝一杯咖啡", "这本小说的结局让人意外", "银行今天下午三点关门"]


@pytest.fixture(scope="module")
def domains():
    return benchmark_module("domains")


TINY = ["batch_size=4", "data.min_chars=2", "data.shuffle_buffer=4", "model.max_length=16", "eval.every=0",
        "data.num_workers=0", "threads=1"]


def test_a_killed_run_resumes_from_its_last_checkpoint(domains, tiny_bert, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    real_run = subprocess.run
    calls = []

    def killed_after_step_2(command, **kwargs):
        """The first launch trains to its step-2 checkpoint and is then 'killed' (SIGKILL's return code,
        nothing exported); later launches run as they are."""
        calls.append(list(command))
        if len(calls) > 1:
            return real_run(command, **kwargs)
        first = [("max_steps=2" if a.startswith("max_steps=") else a) for a in command]
        assert real_run(first, **kwargs).returncode == 0
        shutil.rmtree(out / "final")
        return subprocess.CompletedProcess(command, -9)

    monkeypatch.setattr(domains.subprocess, "run", killed_after_step_2)
    result = domains.run_luse("pretrain_luse", TINY, corpus, str(tiny_bert), 4, out, save_every=1)
    assert len(calls) == 2 and "resume=latest" not in calls[0] and calls[1][-1] == "resume=latest"
    assert result["killed"] == [-9] and result["train_seconds"] is None  # the time of the killed part is unknown
    info = json.loads((out / "final" / "luse.json").read_text(encoding="utf-8"))
    assert info.get("metadata", info)["step"] == 4
    assert "resume=latest" not in result["command"]  # the command a user reruns is the run's own


def test_a_run_that_fails_on_its_own_is_not_retried(domains, tiny_bert, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(domains.subprocess, "run", lambda command, **kw: calls.append(command) or real_run(command, **kw))
    with pytest.raises(RuntimeError, match="expected a known config key"):
        domains.run_luse("pretrain_luse", ["no_such_key=1"], corpus, str(tiny_bert), 2, tmp_path / "run")
    assert len(calls) == 1
