"""The training loop: exact resume, signals, non-finite losses, best/final export."""

import os
import random
import re
import signal

import pytest
import torch
from safetensors.torch import load_file

from luse.config import load_config
from luse.model.encoder import SentenceEncoder
from luse.objectives.views import ViewsObjective
from luse.train import precision as precision_module
from luse.train import train
from luse.train.checkpoint import list_checkpoints
from luse.train.precision import cpu_has_native_bf16, resolve_mixed_precision
from luse.train.step import NonFiniteLossError

CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"


def corpus(n=96, seed=0):
    rng = random.Random(seed)
    return [("".join(rng.choice(CHARS) for _ in range(rng.randint(6, 20)))) for _ in range(n)]


SENTENCES = corpus()


def make_items(epoch):
    order = list(range(len(SENTENCES)))
    random.Random(epoch).shuffle(order)
    return (SENTENCES[i] for i in order)


def _config(tmp_path, name, **overrides):
    base = {"output_dir": str(tmp_path / name), "max_steps": 6, "batch_size": 8, "lr": 1e-3, "save_every": 3,
            "eval.every": 3, "log_every": 1, "report_to": "none", "warmup_ratio": 0.3,
            "views.dropout": 2, "model.pooling": "mean"}
    base.update(overrides)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def _run(config, tiny_bert, evaluate=None, objective_cls=ViewsObjective):
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert), pooling=config.model.pooling,
                                              max_length=config.model.max_length)
    objective = objective_cls(encoder.tokenizer, config.model.max_length, config.views, config.loss)
    return train(config, objective, make_items, encoder=encoder, evaluate=evaluate)


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_resume_is_exact(tmp_path, tiny_bert):
    """6 steps straight == 3 steps, a SIGINT, resume=latest, 3 more steps: bitwise."""
    def score(encoder):
        return {"score": float(encoder.encode(SENTENCES[:4]).sum()), "table": ""}

    straight = _run(_config(tmp_path, "a"), tiny_bert, evaluate=score)
    assert straight.step == 6 and straight.interrupted is None

    def interrupt_at_3(encoder):
        os.kill(os.getpid(), signal.SIGINT)  # handled by the trainer: checkpoint, then stop
        return score(encoder)

    first = _run(_config(tmp_path, "b"), tiny_bert, evaluate=interrupt_at_3)
    assert first.interrupted == "SIGINT" and first.step == 3 and first.final_dir is None
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-00000003"]
    resumed = _run(_config(tmp_path, "b", resume="latest"), tiny_bert, evaluate=score)
    assert resumed.step == 6

    a, b = _weights(straight.final_dir), _weights(resumed.final_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # and training did change the weights
    start = SentenceEncoder.from_pretrained(str(tiny_bert)).backbone.state_dict()
    assert not torch.equal(start["embeddings.word_embeddings.weight"], a["embeddings.word_embeddings.weight"])
    # best is an export too, and checkpoints are complete (no temp dirs left)
    assert (tmp_path / "a" / "best" / "model.safetensors").exists()
    assert not list((tmp_path / "b" / "checkpoints").glob(".*"))
    assert (tmp_path / "b" / "checkpoints" / "step-00000006" / "config.yaml").exists()


class NaNAtStep2(ViewsObjective):
    calls = 0

    def loss(self, embeddings, batch):
        NaNAtStep2.calls += 1
        loss = super().loss(embeddings, batch)
        return loss * float("nan") if NaNAtStep2.calls == 2 else loss


def test_nan_stops_and_keeps_last_checkpoint(tmp_path, tiny_bert):
    NaNAtStep2.calls = 0
    config = _config(tmp_path, "nan", save_every=1)
    with pytest.raises(NonFiniteLossError, match="step 2"):
        _run(config, tiny_bert, objective_cls=NaNAtStep2)
    found = list_checkpoints(tmp_path / "nan")
    assert [p.name for p in found] == ["step-00000001"]
    weights = load_file(str(found[0] / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_nan_skip_completes(tmp_path, tiny_bert):
    NaNAtStep2.calls = 0
    config = _config(tmp_path, "skip", on_nan="skip", max_steps=3, save_every=0, **{"eval.every": 0})
    result = _run(config, tiny_bert, objective_cls=NaNAtStep2)
    assert result.step == 3
    weights = _weights(result.final_dir)
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_grad_accum_and_grad_cache_run(tmp_path, tiny_bert):
    config = _config(tmp_path, "gc", max_steps=2, grad_accum=2, grad_cache_chunk=5, save_every=0,
                     **{"eval.every": 0})
    result = _run(config, tiny_bert)
    assert result.step == 2 and (result.final_dir / "config.json").exists()


def test_epochs_mode_counts_steps(tmp_path, tiny_bert):
    """max_steps=0 runs `epochs` passes: 96 sentences / batch 16 = 6 steps an epoch."""
    config = _config(tmp_path, "epochs", max_steps=0, epochs=2, batch_size=16, save_every=0, **{"eval.every": 0})
    result = _run(config, tiny_bert)
    assert result.step == 12


def test_direct_train_call_honours_every_model_key(tmp_path, tiny_bert):
    """train(config, ...) without an encoder builds it from config.model with the fast path's keys too."""
    from transformers import AutoTokenizer

    keys = {"model.chunk_rows": 0, "model.cls_only": False, "model.unpad": False, "model.fast_dropout": False}
    config = _config(tmp_path, "keys", max_steps=1, save_every=0, **{"eval.every": 0, "model.name_or_path": tiny_bert,
                                                                    "model.pooling": "cls"}, **keys)
    seen = {}

    def evaluate(encoder):
        seen.update(chunk_rows=encoder.chunk_rows, cls_only=encoder.cls_only, unpad=encoder.unpad,
                    fast_dropout=encoder.fast_dropout)
        return {"score": None}

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    train(config, ViewsObjective(tokenizer, config.model.max_length, config.views, config.loss), make_items,
          evaluate=evaluate)
    assert seen == {"chunk_rows": 0, "cls_only": False, "unpad": False, "fast_dropout": False}


@pytest.mark.parametrize("flags, native", [("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),
                                           ("fpu avx2 amx_bf16 amx_tile", True),
                                           ("fpu avx2 avx512f avx512_vnni", False)])
def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n", encoding="utf-8")
    assert cpu_has_native_bf16(str(cpuinfo)) is native
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False  # no /proc (macOS, Windows): fp32


def test_auto_precision_is_bf16_only_where_native(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_mixed_precision("auto") == expected
        assert resolve_mixed_precision("no") == "no" and resolve_mixed_precision("bf16") == "bf16"
        assert resolve_mixed_precision("auto", "cpu") == expected  # the device named: the CPU's answer


# --- run directories: what is resumed, what is refused --------------------------------------------

@pytest.fixture
def luse_log(caplog):
    """luse's own log records (its logger does not propagate once a recipe set it up)."""
    import logging

    logger = logging.getLogger("luse")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="luse")
    yield caplog
    logger.removeHandler(caplog.handler)


def test_resume_skips_a_corrupted_newest_checkpoint(tmp_path, tiny_bert, luse_log):
    straight = _run(_config(tmp_path, "run", max_steps=4, save_every=2, **{"eval.every": 0}), tiny_bert)
    expected = _weights(straight.final_dir)
    newest = list_checkpoints(tmp_path / "run")[-1]
    assert newest.name == "step-00000004"
    os.truncate(newest / "model.safetensors", 1000)  # a disk that filled up, a copy cut short
    resumed = _run(_config(tmp_path, "run", max_steps=4, save_every=2, resume="latest", **{"eval.every": 0}),
                   tiny_bert)
    assert resumed.step == 4
    warnings = [r.getMessage() for r in luse_log.records if r.levelname == "WARNING"]
    assert any(str(newest) in message and "does not load" in message for message in warnings), warnings
    got = _weights(resumed.final_dir)  # resumed from step 2: the same weights as the straight run
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_resume_with_no_checkpoint_that_loads_is_one_line(tmp_path, tiny_bert):
    from luse.errors import InputError

    _run(_config(tmp_path, "run", max_steps=2, save_every=1, **{"eval.every": 0}), tiny_bert)
    for checkpoint in list_checkpoints(tmp_path / "run"):
        os.truncate(checkpoint / "model.safetensors", 1000)
    with pytest.raises(InputError, match=r"step-00000002: expected a checkpoint that loads, got '2 checkpoint"):
        _run(_config(tmp_path, "run", max_steps=2, resume="latest"), tiny_bert)


def test_resume_latest_with_nothing_to_resume_says_so(tmp_path, tiny_bert, luse_log):
    result = _run(_config(tmp_path, "fresh", max_steps=1, save_every=0, resume="latest", **{"eval.every": 0}),
                  tiny_bert)
    assert result.step == 1
    assert any("no checkpoint" in r.getMessage() and "starting from step 0" in r.getMessage()
               for r in luse_log.records), [r.getMessage() for r in luse_log.records]


def test_a_new_run_into_an_earlier_runs_directory_is_refused(tmp_path, tiny_bert):
    from luse.errors import InputError

    _run(_config(tmp_path, "run", max_steps=2, save_every=1, **{"eval.every": 0}), tiny_bert)
    before = [p.name for p in list_checkpoints(tmp_path / "run")]
    with pytest.raises(InputError) as error:
        _run(_config(tmp_path, "run", max_steps=2, save_every=1, **{"eval.every": 0}), tiny_bert)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "run")) and "resume=latest" in message and "\n" not in message
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == before  # nothing mixed in, nothing deleted


@pytest.mark.parametrize("content", [b"", b"\xb0\xa1\xb0\xa1\n" * 50], ids=["empty", "all-gbk"])
def test_a_corpus_without_one_batch_is_one_line_and_leaves_no_output_dir(tmp_path, tiny_bert, capsys, content):
    from conftest import recipe_main

    from luse.train.outcome import exit_code

    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    out = tmp_path / "out"
    code = exit_code("simcse_unsup", recipe_main("simcse_unsup"),
                     [f"model.name_or_path={tiny_bert}", f"output_dir={out}", f"data.corpus=[{corpus}]",
                      "max_steps=2", "batch_size=4", "report_to=tensorboard"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    [line] = [line for line in err.splitlines() if "error" in line]
    assert line.startswith(f"simcse_unsup: error: data.corpus=[{corpus}]: expected at least 4 items"), line
    assert ("skipped 50 of 50 lines: 50 invalid UTF-8" if content else "read 0 lines") in line, line
    assert not out.exists()  # no config.yaml, no logs/: nothing that looks like a run


def test_simcse_sup_without_a_corpus_is_one_line_and_leaves_no_output_dir(tmp_path, tiny_bert, capsys):
    from conftest import recipe_main

    from luse.train.outcome import exit_code

    out = tmp_path / "out"
    code = exit_code("simcse_sup", recipe_main("simcse_sup"),
                     [f"model.name_or_path={tiny_bert}", f"output_dir={out}", "max_steps=2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "simcse_sup: error: data.corpus: expected" in err, err
    assert not out.exists()


def test_a_model_path_that_does_not_exist_says_no_such_directory(tmp_path, capsys):
    from conftest import recipe_main

    from luse.train.outcome import exit_code

    missing = tmp_path / "nonexistent"
    code = exit_code("simcse_unsup", recipe_main("simcse_unsup"),
                     [f"model.name_or_path={missing}", f"output_dir={tmp_path / 'out'}", "max_steps=1"])
    err = capsys.readouterr().err
    assert code == 2 and f"simcse_unsup: error: {missing}: expected a model directory" in err, err
    assert "no such directory" in err and "Repo id" not in err and "Traceback" not in err


@pytest.mark.parametrize("workers", [1, 2])
def test_skipped_lines_are_reported_at_the_end_with_dataloader_workers(tmp_path, tiny_bert, luse_log, workers):
    """A half-GBK corpus read by DataLoader workers: the run still reports the skipped lines (issue 16, case 4)."""
    from conftest import recipe_main

    from luse.train.outcome import exit_code

    path = tmp_path / "half-gbk.txt"  # far more than 2 steps read: the run stops mid-epoch
    path.write_bytes(b"".join((s.encode("gbk") if i % 2 else s.encode("utf-8")) + b"\n"
                                for i, s in enumerate(corpus(n=2000, seed=1))))
    code = exit_code("simcse_unsup", recipe_main("simcse_unsup"),
                     [f"model.name_or_path={tiny_bert}", f"output_dir={tmp_path / 'out'}", f"data.corpus=[{path}]",
                      "max_steps=2", "batch_size=4", "report_to=none", "eval.every=0", "save_every=0",
                      "eval.label_free_sentences=4", f"data.num_workers={workers}", "data.shuffle_buffer=8"])
    assert code == 0
    reports = [r.getMessage() for r in luse_log.records if "invalid UTF-8" in r.getMessage()]
    assert reports and reports[-1].startswith("data (as far as read): skipped "), reports
    assert f" invalid UTF-8 (first at {path}:2)" in reports[-1], reports
    # Building the second batch took 2 x 4 sentences past an 8-sentence shuffle buffer, every other line GBK:
    # at least 32 lines, which only the workers read (this process read 12 sentences before training).
    seen = int(re.search(r"skipped [\d,]+ of ([\d,]+) lines", reports[-1]).group(1).replace(",", ""))
    assert seen >= 32, reports
