"""benchmarks/screen.py: a fixed-step screen trains the real recipe on a domain's corpus (or on the scored
split's own texts) and scores the export and each checkpoint on the chosen split."""

import json

import pytest
from conftest import benchmark_module
from tiny_models import SENTENCES, TINY_RUN

from luse.data.sts import StsSet

TINY = [*TINY_RUN, "model.pooling=cls", "model.export_as_cls=false", "loss.anchor_weight=0"]


@pytest.fixture(scope="module")
def screen():
    return benchmark_module("screen")


def tiny_domain(screen, base, dev=True):
    dev_pairs = StsSet("dev", SENTENCES[:4], SENTENCES[4:], [5.0, 1.0, 3.0, 0.0])
    test_pairs = StsSet("test", SENTENCES[::2], SENTENCES[1::2], [0.0, 2.0, 4.0, 1.0])
    return screen.bench.Domain("tiny", str(base), SENTENCES * 3, dev_pairs if dev else None, test_pairs)


def test_a_screen_scores_the_export_and_every_checkpoint_on_dev(screen, tiny_bert, tmp_path):
    result = screen.screen(tiny_domain(screen, tiny_bert), 2, TINY, tmp_path, save_every=1)
    assert result["steps"] == 2 and result["split"] == "dev" and result["corpus_texts"] == 24
    assert set(result["score"]) == {"cls"} and -100 <= result["score"]["cls"] <= 100
    assert [step for step, _ in result["curve"]] == [1, 2]
    assert result["curve"][-1][1] == result["score"]  # the last checkpoint is the exported model
    assert "max_steps=2" in result["command"] and "DIR" in result["command"]
    json.dumps(result)  # one JSON line


def test_own_corpus_is_the_scored_splits_texts_and_test_needs_asking(screen, tiny_bert, tmp_path):
    domain = tiny_domain(screen, tiny_bert, dev=False)
    with pytest.raises(SystemExit, match="no dev split; use --split test"):
        screen.screen(domain, 1, TINY, tmp_path)
    assert sorted(screen.corpus_texts(domain, "own", "test")) == sorted(SENTENCES)
    result = screen.screen(domain, 1, TINY, tmp_path, corpus="own", split="test")
    assert result["corpus_texts"] == 8 and result["split"] == "test" and "curve" not in result
    written = (tmp_path / "tiny" / "corpus-own-test.txt").read_text(encoding="utf-8").split()
    assert sorted(written) == sorted(SENTENCES)


def test_the_command_line_appends_one_result_line(screen, tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr(screen.bench, "load_domains", lambda names, data_dir, limit: [tiny_domain(screen, tiny_bert)])
    results = tmp_path / "screens.jsonl"
    work = tmp_path / "work"
    argv = ["--domain", "stsb-zh", "--steps", "1", "--tag", "cand", "--results", str(results), "--work", str(work)]
    assert screen.main(argv + TINY) == 0
    assert screen.main(argv + TINY + ["lr=1e-5"]) == 0
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert [line["tag"] for line in lines] == ["cand", "cand"] and lines[1]["overrides"][-1] == "lr=1e-5"
    assert len(list((work / "tiny").glob("run-*"))) == 2  # two screens in one folder never share a run directory
