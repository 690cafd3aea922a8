"""benchmarks/domains.py: a luse row whose run is killed from outside resumes instead of losing the domain;
`--seeds` trains the luse, peer and reference rows again per seed and lists the spread."""

import json
import shutil
import subprocess

import pytest
from conftest import benchmark_module
from tiny_models import SENTENCES, TINY_RUN


@pytest.fixture(scope="module")
def domains():
    return benchmark_module("domains")



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
    result = domains.run_luse("pretrain_luse", TINY_RUN, corpus, str(tiny_bert), 4, out, save_every=1)
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


def test_seeds_train_each_luse_row_again_at_the_same_steps_and_render_the_spread(domains, tmp_path, monkeypatch):
    runs = []

    def fake_run(recipe, overrides, corpus, base, steps, out, save_every=0):
        runs.append((out.name, steps, [o for o in overrides if o.startswith("seed=")]))
        killed = [3] if out.name == "luse_pretrain-seed11-2N" else []  # killed once, resumed from step 3
        return {"export": out, "train_seconds": 2.0 * steps, "killed": killed, "command": f"recipes/{recipe}.py"}

    # a score per run that says which run it was: N runs 80 + seed/100, 2N runs 79 + seed/100
    def fake_score(model_dir, domain, poolings=None):
        seed = int(model_dir.name.split("seed")[1].split("-")[0]) if "seed" in model_dir.name else 0
        return {"test": {"cls": (79.0 if model_dir.name.endswith("-2N") else 80.0) + seed / 100}}

    monkeypatch.setattr(domains, "run_luse", fake_run)
    monkeypatch.setattr(domains, "score_dir", fake_score)
    args = domains.argparse.Namespace(calibration_steps=2, double=True, seeds=[7, 11])
    row = domains.luse_row(type("D", (), {"base": "m3e-small"})(), "luse_pretrain", 10.0, tmp_path / "c.txt",
                           tmp_path, args)
    # calibration (2 steps: 4 s, so N = 10 / 2 = 5), N, 2N, then N and 2N again per seed
    assert runs == [("luse_pretrain-calib", 2, []), ("luse_pretrain-N", 5, []), ("luse_pretrain-2N", 10, []),
                    ("luse_pretrain-seed7-N", 5, ["seed=7"]), ("luse_pretrain-seed7-2N", 10, ["seed=7"]),
                    ("luse_pretrain-seed11-N", 5, ["seed=11"]), ("luse_pretrain-seed11-2N", 10, ["seed=11"])]
    assert row["seeds"] == [{"seed": 7, "scores": {"test": {"cls": 80.07}}, "double": {"test": {"cls": 79.07}}},
                            {"seed": 11, "scores": {"test": {"cls": 80.11}}, "double": {"test": {"cls": 79.11}},
                             "double_resumed_after": [3]}]
    lines = domains._seed_spread({"base": {"scores": {"test": {"cls": 70.0}}}, "luse_pretrain": row})
    assert lines == ["- luse_pretrain over 3 seeds (default, 7, 11), test: N 80.00 / 80.07 / 80.11 (mean 80.06); "
                     "2x time 79.00 / 79.07 / 79.11 (mean 79.06); doubling -1.00 / -1.00 / -1.00 (mean -1.00)"]
    assert domains._seed_spread({"luse_pretrain": {**row, "seeds": []}}) == []  # one seed: nothing to spread


def test_peer_and_reference_rows_are_repeated_per_seed_at_their_first_steps(domains, tmp_path, monkeypatch):
    calls = []

    def fake_peer(domain, steps, bf16, out, snapshots, seed=42):
        calls.append(("peer", bf16, steps, list(snapshots), seed))
        return {"seconds": 1.0, "points": [(steps, 1.0, out)]}

    def fake_reference(domain, budget, out, bf16, lr=3e-5, seed=42, max_steps=None):
        calls.append(("reference", max_steps, seed))
        return {"steps": max_steps, "seconds": 1.0, "model_dir": out}

    def fake_score(model_dir, domain, poolings=None):
        return {"test": {"cls": 70.0 + int(model_dir.name.split("seed")[1]) / 100}}

    monkeypatch.setattr(domains, "train_peer", fake_peer)
    monkeypatch.setattr(domains, "reference_loop", fake_reference)
    monkeypatch.setattr(domains, "score_dir", fake_score)
    rows = {"base": {"scores": {"test": {"cls": 60.0, "mean": 72.0}}},
            "peer_bf16": {"steps": 150, "scores": {"test": {"cls": 73.0}}},
            "reference": {"steps": 135, "scores": {"test": {"cls": 72.0}},
                          "seeds": [{"seed": 7, "scores": {"test": {"cls": 71.0}}}]},
            "peer_fp32": {"skipped": "no native bf16"},
            "luse_pretrain": {"scores": {"test": {"cls": 76.0}},
                              "seeds": [{"seed": 7, "scores": {"test": {"cls": 75.0}}}]}}
    args = domains.argparse.Namespace(rows=["peer_fp32", "peer_bf16", "reference"])
    for seed in (7, 11):
        domains.peer_seed(None, rows, seed, args, tmp_path)
    # the reference already has seed 7 (an earlier file's row): only seed 11 runs, at its first run's 135 steps
    assert calls == [("peer", True, 150, [150], 7), ("peer", True, 150, [150], 11), ("reference", 135, 11)]
    assert rows["peer_bf16"]["seeds"] == [{"seed": 7, "scores": {"test": {"cls": 70.07}}},
                                          {"seed": 11, "scores": {"test": {"cls": 70.11}}}]
    verdicts = domains._verdicts(rows)
    # luse 75.5 over 2 runs; peer_bf16 (73 + 70.07 + 70.11) / 3 = 71.06; reference (72 + 71 + 70.11) / 3 = 71.04
    assert verdicts[-1] == ("- test, means over seeds: luse_pretrain 75.50 (2 runs), +4.44 against the best peer row "
                            "(peer_bf16, 3 runs), +3.50 against the base's best pooling")


def test_reference_loop_runs_exactly_max_steps_and_its_seed_matters(domains, tiny_bert, tmp_path, monkeypatch):
    domain = domains.Domain("tiny", str(tiny_bert), SENTENCES * 20, None, None)
    monkeypatch.setattr(domains, "PEER_BATCH", 4)
    runs = [domains.reference_loop(domain, float("inf"), tmp_path / f"s{seed}", bf16=False, seed=seed, max_steps=3)
            for seed in (42, 42, 7)]
    assert [r["steps"] for r in runs] == [3, 3, 3]
    weights = [(r["model_dir"] / "model.safetensors").read_bytes() for r in runs]
    assert weights[0] == weights[1] != weights[2]


def test_own_corpus_is_the_scored_texts_and_hides_the_test_split(domains):
    from luse.data.sts import StsSet

    dev = StsSet("dev", SENTENCES[:3], SENTENCES[3:6], [1.0, 2.0, 3.0])
    test = StsSet("test", SENTENCES[6:], SENTENCES[:2], [0.0, 4.0])
    domain = domains.Domain("d", "base", ["some other corpus sentence"], dev, test)
    own = domains.own_texts(domain)
    assert sorted(own.corpus) == sorted(SENTENCES[:6]) and own.dev is dev and own.test is None  # trained on: never scored as test
    without_dev = domains.own_texts(domains.Domain("s", "base", [], None, test))
    assert sorted(without_dev.corpus) == sorted(SENTENCES[6:] + SENTENCES[:2]) and without_dev.test is test
