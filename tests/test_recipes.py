"""Each recipe, launched for real with `accelerate launch` on a tiny model for 2 steps."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from conftest import REPO

pytestmark = pytest.mark.slow

SENTENCES = ["今天天气很好，我们去公园散步吧。", "他在图书馆读了一下午的书。", "这家店的咖啡味道不错。",
             "明天可能会下雨，记得带伞。", "猫坐在窗台上晒太阳。", "我们下周一开会讨论这个问题。",
             "这部电影的结局出人意料。", "孩子们在操场上踢足球。", "请把文件发到我的邮箱。",
             "火车晚点了半个小时。", "她每天早上跑步五公里。", "新的政策将于下月实施。"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(recipe, overrides, processes=1, timeout=300):
    # Several CPU processes: accelerate 1.15 starts only one with --cpu; --multi_gpu starts them
    # and the trainer picks gloo on CPU.
    device = ["--multi_gpu"] if processes > 1 else ["--cpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), *device,
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(REPO / "recipes" / f"{recipe}.py"), *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    corpus = root / "corpus.txt"
    # a line that is not UTF-8 and an empty line first: skipped, counted and reported
    corpus.write_bytes(b"\xff bad utf-8 line\n\n" + "\n".join(SENTENCES * 2).encode("utf-8") + b"\n")
    sts = root / "sts.tsv"
    sts.write_text("".join(f"{a}\t{b}\t{i % 6}\n" for i, (a, b) in enumerate(zip(SENTENCES, SENTENCES[1:]))),
                   encoding="utf-8")
    triplets = root / "triplets.jsonl"
    triplets.write_text("".join(json.dumps({"anchor": a, "positive": a[:-1], "negative": b}, ensure_ascii=False) + "\n"
                                for a, b in zip(SENTENCES, SENTENCES[3:] + SENTENCES[:3])), encoding="utf-8")
    # pretrain_luse's EDA views look synonyms up here instead of building the default cache.
    cache = small_cache(root / "synonyms.lsc")
    return {"corpus": corpus, "sts": sts, "triplets": triplets, "cache": cache}


def common(tmp_path, tiny_bert, data, **extra):
    args = {"output_dir": tmp_path / "out", "max_steps": 2, "batch_size": 4, "model.name_or_path": tiny_bert,
            "eval.sts": f"[{data['sts']}]", "eval.every": 1, "save_every": 1, "data.min_chars": 2,
            "data.shuffle_buffer": 4, "views.synonym_cache": data["cache"]}
    args.update(extra)
    return [f"{k}={v}" for k, v in args.items()]


def check_export(out, sts_expected=True):
    from transformers import AutoTokenizer, BertModel

    final = out / "final"
    model = BertModel.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    with torch.no_grad():
        vectors = model(**tokenizer(SENTENCES[:2], padding=True, return_tensors="pt"))[1]
    assert vectors.shape == (2, 32) and torch.isfinite(vectors).all()
    assert (out / "best" / "model.safetensors").exists() == sts_expected
    assert (out / "checkpoints" / "step-00000002").is_dir()
    assert (out / "config.yaml").exists()


def test_pretrain_luse(tmp_path, tiny_bert, data):
    """The shipped recipe as it is (its views and loss), on a tiny model."""
    result = launch("pretrain_luse", common(tmp_path, tiny_bert, data, **{"data.corpus": data["corpus"]}))
    assert result.returncode == 0, result.stderr[-3000:]
    check_export(tmp_path / "out")
    assert "invalid UTF-8" in result.stderr  # the bad line is skipped, counted and reported


def test_simcse_unsup(tmp_path, tiny_bert, data):
    result = launch("simcse_unsup", common(tmp_path, tiny_bert, data, **{"data.corpus": data["corpus"]}))
    assert result.returncode == 0, result.stderr[-3000:]
    check_export(tmp_path / "out")


def test_simcse_sup(tmp_path, tiny_bert, data):
    result = launch("simcse_sup", common(tmp_path, tiny_bert, data, **{"data.corpus": data["triplets"]}))
    assert result.returncode == 0, result.stderr[-3000:]
    check_export(tmp_path / "out")


def test_cosent(tmp_path, tiny_bert, data):
    result = launch("cosent", common(tmp_path, tiny_bert, data, **{"data.corpus": data["sts"]}))
    assert result.returncode == 0, result.stderr[-3000:]
    check_export(tmp_path / "out")


def test_config_errors_are_one_line(tmp_path, tiny_bert, data):
    result = launch("pretrain_luse", common(tmp_path, tiny_bert, data, max_step=3))
    assert result.returncode != 0  # the recipe exits 2; `accelerate launch` reports any failure as 1
    assert "pretrain_luse: error: command line: expected a known config key (did you mean 'max_steps'?)" \
        in result.stderr
    assert "Traceback" not in result.stderr.split("pretrain_luse: error")[0][-2000:]
    bad_sts = tmp_path / "bad.tsv"
    bad_sts.write_text("only one column\n", encoding="utf-8")
    result = launch("pretrain_luse", common(tmp_path, tiny_bert, data, **{"eval.sts": f"[{bad_sts}]",
                                                                          "data.corpus": data["corpus"]}))
    assert result.returncode != 0 and "pretrain_luse: error: " in result.stderr and "bad.tsv:1" in result.stderr


def test_two_processes_match_one(tmp_path, data):
    """Gathered negatives: 2 processes x 4 sentences == 1 process x 8 sentences (dropout off)."""
    from safetensors.torch import load_file
    from tiny_models import make_tiny_model

    model = make_tiny_model(tmp_path / "model", dropout=0.0)
    args = {"max_steps": 3, "model.name_or_path": model, "data.corpus": data["corpus"], "data.min_chars": 2,
            "views.dropout": 1, "views.eda": 0, "eval.every": 0, "save_every": 0, "report_to": "none", "lr": 1e-3,
            "mixed_precision": "no"}  # the same algorithm, so fp32: bf16 rounds differently once the batch is split
    one = launch("pretrain_luse", [f"{k}={v}" for k, v in {**args, "output_dir": tmp_path / "one",
                                                            "batch_size": 8}.items()])
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch("pretrain_luse", [f"{k}={v}" for k, v in {**args, "output_dir": tmp_path / "two",
                                                            "batch_size": 4}.items()], processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    start = load_file(str(model / "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    assert not torch.allclose(a[key], start[key])  # it trained
    # Float32 sums in another order move a few near-zero-gradient weights a little under Adam
    # (it divides by |g|); a wrong gather changes the whole update, so compare the updates as a whole.
    # The trained weights (the export's fixed mean layer, model.export_as_cls, is the same in both).
    moved = sum(float((a[k] - start[k]).abs().sum()) for k in start)
    differ = sum(float((a[k] - b[k]).abs().sum()) for k in a)
    assert differ / moved < 1e-3


def small_cache(path):
    import numpy as np
    from luse.augment.synonyms.store import write_cache

    groups = [["天气", "天色"], ["公园", "花园"], ["咖啡", "茶水"], ["足球", "篮球"], ["文件", "资料"], ["孩子", "小孩"]]
    words = [w for g in groups for w in g]
    ids = np.array([[words.index(g[1 - g.index(w)])] for g in groups for w in g], dtype=np.int32)
    return write_cache(path, words, ids, np.ones_like(ids, dtype=np.float32), identity={"test": "tiny"})


def test_views_pipeline_with_eda(tmp_path, tiny_bert):
    """Each sentence becomes itself + EDA views + dropout copies, in one tokenised block."""
    import random

    from transformers import AutoTokenizer

    from luse.config import load_config
    from luse.objectives.views import ViewsObjective, eda_augmenter

    config = load_config(None, ["views.eda=2", "views.dropout=3", f"views.synonym_cache={small_cache(tmp_path / 'c.lsc')}"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    objective = ViewsObjective(tokenizer, 64, config.views, config.loss, eda_augmenter(config.views))
    assert objective.num_views == 6
    batch = objective.collate(SENTENCES[:4], random.Random(0))
    ids = batch["input_ids"].view(4, 6, -1)
    for sentence in ids:
        assert all(torch.equal(sentence[0], sentence[v]) for v in (3, 4, 5))  # dropout copies
        assert not torch.equal(sentence[0], sentence[1]) or not torch.equal(sentence[0], sentence[2])  # EDA


def test_pretrain_luse_with_eda_views(tmp_path, tiny_bert, data):
    result = launch("pretrain_luse", common(tmp_path, tiny_bert, data, **{
        "data.corpus": data["corpus"], "views.eda": 2, "views.dropout": 2, "data.num_workers": 2}))
    assert result.returncode == 0, result.stderr[-3000:]
    check_export(tmp_path / "out")


def luse_train(recipe, overrides, timeout=300, options=()):
    cmd = [sys.executable, "-m", "luse.cli", "train", *options, recipe, *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_luse_train_launches_the_recipe(tmp_path, tiny_bert, data):
    """`luse train RECIPE key=value ...`: the recipe under accelerate's launcher, without its warnings."""
    result = luse_train("simcse_unsup", common(tmp_path, tiny_bert, data, **{"data.corpus": data["corpus"]}))
    assert result.returncode == 0, result.stderr[-3000:]
    check_export(tmp_path / "out")
    assert "were not passed" not in result.stderr  # every launcher value is passed explicitly
    # What the run does, in one line (the launcher's own notes describe the launch, not the run).
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("luse: ")]
    assert re.search(r"on cpu, \d+ threads per process, 1 process, (fp32|bf16 autocast) \(mixed_precision=auto: ", line)
    assert str(tmp_path / "out") in line


def test_luse_train_exits_with_the_recipes_code_and_one_line(tmp_path, tiny_bert, data):
    result = luse_train("pretrain_luse", common(tmp_path, tiny_bert, data, max_step=3))
    assert result.returncode == 2  # the recipe's own code, not the launcher's 1
    assert "pretrain_luse: error: command line: expected a known config key (did you mean 'max_steps'?)" \
        in result.stderr
    assert "Traceback" not in result.stderr and "were not passed" not in result.stderr
    # Two processes: the same line once (both processes read the same bad input), no agent log.
    result = luse_train("pretrain_luse", common(tmp_path, tiny_bert, data, max_step=3), options=["--num-processes", "2"])
    assert result.returncode == 2
    shown = [line for line in result.stderr.splitlines() if line.strip() and "Loading weights" not in line]
    assert shown == ["pretrain_luse: error: command line: expected a known config key (did you mean 'max_steps'?), "
                     "got \"unknown key 'max_step'\""], shown
    result = luse_train("no_such_recipe", [])
    assert result.returncode == 2 and "luse: error: no recipe 'no_such_recipe'" in result.stderr
