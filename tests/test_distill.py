"""Similarity distillation: the loss against a direct loop formula, the objective on a tiny teacher,
student initialisation from the teacher's lower layers, the generator student (distillation + the
RoFormer-Sim generation loss), a 2-step ``accelerate launch`` and an in-process run of the recipe."""

from __future__ import annotations

import math

import pytest
import torch
from test_seq2seq import PAIRS, plain_generator_outputs

from luse.errors import InputError
from luse.losses import SimilarityDistillLoss, similarity_distill_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ------------------------------------------------------------------------------ the loss


def _reference(student: torch.Tensor, teacher: torch.Tensor, weight: float) -> torch.Tensor:
    """weight / n^2 * sum_ij (cos(u_i,u_j) - cos(v_i,v_j))^2, one scalar op at a time."""

    def cos(a, b):
        return torch.dot(a, b) / (a.norm() * b.norm())

    n = student.shape[0]
    total = torch.zeros((), dtype=student.dtype)
    for i in range(n):
        for j in range(n):
            total = total + (cos(teacher[i], teacher[j]) - cos(student[i], student[j])) ** 2
    return weight / n**2 * total


def _python_reference(student: list[list[float]], teacher: list[list[float]], weight: float) -> float:
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    n = len(student)
    return weight / n**2 * sum((cos(teacher[i], teacher[j]) - cos(student[i], student[j])) ** 2
                               for i in range(n) for j in range(n))


@pytest.mark.parametrize("n, h_student, h_teacher, weight", [(1, 4, 4, 100.0), (5, 3, 7, 100.0), (9, 6, 6, 2.5)])
def test_loss_matches_loop_formula_values_and_gradients(n, h_student, h_teacher, weight):
    generator = torch.Generator().manual_seed(n * 31 + h_teacher)
    student = torch.randn(n, h_student, generator=generator, dtype=torch.float64)
    teacher = torch.randn(n, h_teacher, generator=generator, dtype=torch.float64) * 3
    ours_input = student.clone().requires_grad_(True)
    ref_input = student.clone().requires_grad_(True)

    ours = similarity_distill_loss(ours_input, teacher, weight=weight)
    ref = _reference(ref_input, teacher, weight)
    assert abs(float(ours.detach()) - _python_reference(student.tolist(), teacher.tolist(), weight)) < 1e-9
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)

    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours_input.grad, ref_input.grad, rtol=1e-9, atol=1e-12)
    if n > 1:
        assert ours_input.grad.abs().sum() > 0


def test_loss_zero_when_student_is_a_rotated_scaled_teacher():
    teacher = torch.randn(6, 4, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    student = (teacher @ rotation) * torch.tensor([[2.0], [0.5], [1.0], [3.0], [7.0], [0.1]], dtype=torch.float64)
    assert float(similarity_distill_loss(student, teacher)) < 1e-20
    assert float(similarity_distill_loss(torch.randn(6, 4, dtype=torch.float64), teacher)) > 1.0


def test_teacher_gets_no_gradient_and_module_matches_function():
    teacher = torch.randn(4, 5, requires_grad=True)
    student = torch.randn(4, 3, requires_grad=True)
    loss = SimilarityDistillLoss(weight=10.0)(student, teacher)
    torch.testing.assert_close(loss, similarity_distill_loss(student, teacher, weight=10.0), rtol=0, atol=0)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    assert "weight=10.0" in repr(SimilarityDistillLoss(weight=10.0))


@pytest.mark.parametrize("student, teacher, weight", [
    (torch.randn(3), torch.randn(3, 4), 100.0),
    (torch.randn(0, 4), torch.randn(0, 4), 100.0),
    (torch.randn(3, 4), torch.randn(2, 4), 100.0),
    (torch.randn(3, 4), torch.randn(3, 4), 0.0),
])
def test_loss_rejects_bad_shapes_and_weight(student, teacher, weight):
    with pytest.raises(InputError) as error:
        similarity_distill_loss(student, teacher, weight=weight)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------ objective and student

SENTENCES = ["今天天气很好，我们去公园散步吧。", "他在图书馆读了一下午的书。", "这家店的咖啡味道不错。",
             "明天可能会下雨，记得带伞。", "猫坐在窗台上晒太阳。", "我们下周一开会讨论这个问题。",
             "这部电影的结局出人意料。", "孩子们在操场上踢足球。", "请把文件发到我的邮箱。",
             "火车晚点了半个小时。", "她每天早上跑步五公里。", "新的政策将于下月实施。",
             "股市今天大幅上涨。", "医生建议他多喝水多休息。", "这条河的水很清澈。", "老师在黑板上写字。"]
CPU = type("Accelerator", (), {"device": torch.device("cpu")})()


def _cosines(encoder, texts):
    vectors = torch.nn.functional.normalize(torch.from_numpy(encoder.encode(texts)), dim=-1)
    return vectors @ vectors.T


def structured_teacher(tiny_bert, out):
    """tiny_bert with larger random weights: a default-initialised random BERT puts every sentence at
    cosine ~0.99999 to every other, which leaves nothing to distil; at std 0.3 cosines spread over
    about 0.2..1."""
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(tiny_bert)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    # no dropout in the student derived from it: 30 steps show the trend without dropout noise
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(out)
    return out


def test_student_cosine_matrix_approaches_the_teacher(tmp_path, tiny_bert):
    import random

    from luse.data.corpus import peoples_daily_sentences
    from luse.model.student import load_teacher, student_from_teacher
    from luse.objectives.distill import DistillObjective

    sentences = peoples_daily_sentences(300, max_chars=40)
    train, held_out = sentences[:260], sentences[260:]
    torch.manual_seed(0)
    teacher = load_teacher(str(structured_teacher(tiny_bert, tmp_path / "teacher")))
    # The realistic case: a 1-layer student from the 2-layer teacher's lower layer.
    student = student_from_teacher(teacher, layers=1)
    objective = DistillObjective(teacher, student.tokenizer, max_length=64, weight=100.0)
    assert objective.shared_tokens and not any(p.requires_grad for p in teacher.parameters())
    objective.setup(CPU, student)
    gap_before = (_cosines(student, held_out) - _cosines(teacher, held_out)).abs().mean().item()

    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    rng, losses = random.Random(0), []
    student.train()
    for _ in range(30):
        batch = objective.collate(rng.sample(train, 8), rng)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        loss = objective.model_loss(student, inputs, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    gap_after = (_cosines(student, held_out) - _cosines(teacher, held_out)).abs().mean().item()
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, losses
    assert gap_after < 0.85 * gap_before, (gap_before, gap_after)
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_reads_its_own_tokens_when_tokenizers_differ(tiny_bert):
    import random

    from luse.model.encoder import SentenceEncoder
    from luse.model.student import load_teacher
    from luse.objectives.distill import DistillObjective

    teacher = load_teacher(str(tiny_bert), max_length=8)  # another max_length: other tokens
    student = SentenceEncoder.from_pretrained(str(tiny_bert)).eval()
    objective = DistillObjective(teacher, student.tokenizer, max_length=32)
    assert not objective.shared_tokens
    batch = objective.collate(SENTENCES[:5], random.Random(0))
    assert batch["texts"] == SENTENCES[:5]
    assert batch["teacher_inputs"]["input_ids"].shape[1] == 8 < batch["input_ids"].shape[1]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        expected = similarity_distill_loss(student(**inputs), teacher(**teacher.tokenize(SENTENCES[:5])))
        torch.testing.assert_close(objective.model_loss(student, inputs, batch), expected)


def test_student_layers_copy_embeddings_lower_layers_and_pooler(tiny_bert):
    from luse.model.student import load_teacher, student_from_teacher

    teacher = load_teacher(str(tiny_bert))
    student = student_from_teacher(teacher, layers=1)
    assert student.backbone.config.num_hidden_layers == 1 and teacher.backbone.config.num_hidden_layers == 2
    assert student.tokenizer is teacher.tokenizer and student.training and student.fresh == []
    source = teacher.backbone.state_dict()
    copied = student.backbone.state_dict()
    assert any(name.startswith("pooler.") for name in copied) and any("embeddings." in n for n in copied)
    for name, tensor in copied.items():
        assert "layer.1." not in name
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0)
    # one layer of a 2-layer teacher is not the teacher: the outputs differ
    inputs = teacher.tokenize(SENTENCES[:3])
    with torch.no_grad():
        assert not torch.allclose(student.eval()(**inputs), teacher(**inputs))
    with pytest.raises(InputError, match="at most the teacher's 2 layers"):
        student_from_teacher(teacher, layers=3)


def test_narrower_student_config_starts_fresh(tmp_path, tiny_bert):
    from transformers import BertConfig

    from luse.model.student import load_teacher, student_from_teacher

    teacher = load_teacher(str(tiny_bert))
    config = BertConfig.from_pretrained(str(tiny_bert))
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = 16, 32, 1
    config.save_pretrained(tmp_path / "narrow")
    student = student_from_teacher(teacher, config_path=str(tmp_path / "narrow" / "config.json"))
    assert student.hidden_size == 16 and not any("layer." in name for name in student.copied)
    inputs = teacher.tokenize(SENTENCES[:4])
    loss = similarity_distill_loss(student(**inputs), teacher(**inputs))
    loss.backward()
    assert torch.isfinite(loss) and student.backbone.pooler.dense.weight.grad is not None


def test_bad_teacher_is_a_one_line_error(tmp_path):
    from luse.model.student import load_teacher

    with pytest.raises(InputError) as error:
        load_teacher(str(tmp_path / "missing"))
    assert "distill.teacher" in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------ the recipe


@pytest.mark.slow
def test_distill_recipe_launch(tmp_path, tiny_bert):
    from conftest import REPO
    from test_recipes import launch
    from transformers import AutoTokenizer, BertModel

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    overrides = {"output_dir": out, "max_steps": 2, "batch_size": 4, "model.name_or_path": tiny_bert,
                 "distill.teacher": tiny_bert, "distill.student_layers": 1, "data.corpus": corpus,
                 "data.min_chars": 2, "data.shuffle_buffer": 4, "eval.every": 1, "save_every": 1,
                 "report_to": "none"}
    result = launch("distill", [f"{k}={v}" for k, v in overrides.items()])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 layers" in result.stderr and "copied from the teacher" in result.stderr
    model = BertModel.from_pretrained(out / "final").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.num_hidden_layers == 1
    with torch.no_grad():
        vectors = model(**tokenizer(SENTENCES[:2], padding=True, return_tensors="pt"))[1]
    assert vectors.shape == (2, 32) and torch.isfinite(vectors).all()
    assert (out / "checkpoints" / "step-00000002").is_dir()
    assert (REPO / "recipes" / "configs" / "distill.yaml").is_file()


# ------------------------------------------------------------------------------ generator student (LM head)

@pytest.fixture(scope="module")
def seq2seq_teacher(tmp_path_factory, tiny_bert):
    """A RoFormer-Sim export (BertForMaskedLM + luse.json) of the tiny BERT: its LM head is random."""
    from luse.model.seq2seq import Seq2SeqModel, export_seq2seq

    torch.manual_seed(1)
    return export_seq2seq(Seq2SeqModel.from_pretrained(str(tiny_bert), max_length=16),
                          tmp_path_factory.mktemp("teacher") / "sim")


@pytest.mark.parametrize("kind", ["bert-seq2seq-teacher", "roformer-plain-teacher"])
def test_generator_loss_is_distillation_plus_weighted_lm_loss(kind, seq2seq_teacher, tiny_roformer):
    import random

    from luse.model.seq2seq import Seq2SeqModel
    from luse.model.student import load_teacher, student_from_teacher
    from luse.objectives.distill import DistillObjective
    from luse.objectives.roformer_sim import RoFormerSimObjective

    torch.manual_seed(0)
    teacher = load_teacher(str(seq2seq_teacher if kind.startswith("bert") else tiny_roformer), pooling="cls",
                           max_length=16)
    student = student_from_teacher(teacher, layers=1, lm_head=True).eval()
    assert isinstance(student, Seq2SeqModel)
    tok = student.tokenizer
    lm = RoFormerSimObjective(tok, 16, mask_rate=0.3, contrastive_weight=0.0, gather=False)
    objective = DistillObjective(teacher, tok, 16, gather=False, lm=lm, lm_weight=0.7)
    assert objective.shared_tokens
    batch = objective.collate(PAIRS[:3], random.Random(1))
    sentences = [text for pair in PAIRS[:3] for text in pair]
    assert batch["texts"] == sentences  # both sides of every pair are rows of the similarity matrix
    # the LM block is exactly what the RoFormer-Sim objective builds from the same pairs and rng
    reference = RoFormerSimObjective(tok, 16, mask_rate=0.3, contrastive_weight=0.0, gather=False)
    block = reference.collate(PAIRS[:3], random.Random(1))
    assert block.keys() == batch["seq2seq"].keys()
    assert all(torch.equal(batch["seq2seq"][k], block[k]) for k in block)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        got = objective.model_loss(student, inputs, batch)
        distill = similarity_distill_loss(student(**student.tokenize(sentences)),
                                          teacher(**teacher.tokenize(sentences)), gather=False)
        lm_loss = reference.model_loss(student, block, block)
        torch.testing.assert_close(got, distill + 0.7 * lm_loss)
        assert float(lm_loss) > 1.0 and float(distill) > 0.0  # both terms are real
        # lm_weight=0, or no LM objective: exactly the distillation, and no LM block in the batch
        zero = DistillObjective(teacher, tok, 16, gather=False, lm=lm, lm_weight=0.0)
        torch.testing.assert_close(zero.model_loss(student, inputs, zero.collate(PAIRS[:3], random.Random(1))),
                                   distill)
        plain = DistillObjective(teacher, tok, 16, gather=False)
        plain_batch = plain.collate(PAIRS[:3], random.Random(1))
        assert "seq2seq" not in plain_batch and plain_batch["texts"] == sentences
        torch.testing.assert_close(plain.model_loss(student, inputs, plain_batch), distill)
    # one training step reaches every trainable parameter (the LM head included), none of the teacher's
    student.train().zero_grad(set_to_none=True)
    objective.model_loss(student, inputs, batch).backward()
    assert not [n for n, p in student.named_parameters() if p.requires_grad and p.grad is None]
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(InputError, match="pairs of similar sentences"):
        objective.collate(SENTENCES[:4], random.Random(0))


def test_generator_student_copies_layers_and_lm_head(seq2seq_teacher, tiny_bert, tiny_roformer, caplog):
    from transformers import BertModel

    from luse.model.seq2seq import Seq2SeqModel
    from luse.model.student import load_teacher, student_from_teacher

    teacher = load_teacher(str(seq2seq_teacher))
    assert isinstance(teacher, Seq2SeqModel) and not teacher.training and teacher.max_length == 16
    assert not any(p.requires_grad for p in teacher.parameters())
    inputs = teacher.tokenize(SENTENCES[:3])
    with torch.no_grad():  # the teacher's sentence vector is the export's [CLS] state
        plain = BertModel.from_pretrained(seq2seq_teacher).eval()
        torch.testing.assert_close(teacher(**inputs), plain(**inputs)[0][:, 0])

    student = student_from_teacher(teacher, layers=1, lm_head=True)
    assert isinstance(student, Seq2SeqModel) and student.training and student.pooling == "cls"
    assert student.backbone.config.num_hidden_layers == 1 and not student.new_lm_head and student.fresh == []
    assert student.lm_head.predictions.decoder.weight is student.backbone.embeddings.word_embeddings.weight
    source = teacher.mlm_model.state_dict()
    copied = student.mlm_model.state_dict()
    assert any(name.startswith("cls.predictions.transform.") for name in copied)
    for name, tensor in copied.items():
        assert "layer.1." not in name
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0)

    # a plain teacher: layers copied, a new head (logged); the tied decoder is not counted as fresh
    with caplog.at_level("WARNING", logger="luse"):
        fresh_head = student_from_teacher(load_teacher(str(tiny_roformer), pooling="cls"), layers=1,
                                          lm_head=True)
    assert fresh_head.new_lm_head and "the teacher has no LM head" in caplog.text
    assert fresh_head.fresh and all(not name.startswith("roformer.") for name in fresh_head.fresh)
    assert "cls.predictions.decoder.weight" not in fresh_head.fresh
    assert fresh_head.lm_head.predictions.decoder.weight is fresh_head.backbone.embeddings.word_embeddings.weight
    # without lm_head a seq2seq teacher gives a plain CLS encoder, as before
    plain_student = student_from_teacher(teacher, layers=1)
    assert not isinstance(plain_student, Seq2SeqModel) and plain_student.pooling == "cls"


def test_generator_config_errors_are_one_line(tmp_path, tiny_bert):
    from conftest import REPO

    from luse.config import load_config

    yaml_file = REPO / "recipes" / "configs" / "distill.yaml"
    base = [f"distill.teacher={tiny_bert}", "distill.student_layers=1", "model.pooling=cls"]
    for extra, message in ((["distill.lm_weight=1"], "distill.pairs=FILE"),
                           (["distill.lm_weight=-1"], "distill.lm_weight >= 0"),
                           (["distill.lm_weight=1", "distill.pairs=x.jsonl", "model.pooling=pooler"],
                            "model.pooling=cls")):
        with pytest.raises(InputError, match=message) as error:
            load_config(yaml_file, base + extra)  # checked when the config is read
        assert "\n" not in str(error.value)


def test_distill_recipe_generator_student_in_process(tmp_path, monkeypatch, seq2seq_teacher):
    """recipes/distill.py itself (run in this process, as `python recipes/distill.py`): a 1-layer
    generator student of a RoFormer-Sim teacher, exported as a *ForMaskedLM."""
    import json
    import runpy
    import sys

    from conftest import REPO
    from transformers import BertForMaskedLM, BertModel

    from luse.model.seq2seq import load_seq2seq

    pairs, sts, out = tmp_path / "pairs.tsv", tmp_path / "sts.tsv", tmp_path / "out"
    pairs.write_text("".join(f"{a}\t{b}\n" for a, b in PAIRS), encoding="utf-8")  # similar pairs, a<TAB>b
    sts.write_text("".join(f"{a}\t{b}\t{i % 3}\n" for i, (a, b) in enumerate(PAIRS)), encoding="utf-8")
    overrides = {"output_dir": out, "max_steps": 2, "batch_size": 3, "lr": 1e-3, "threads": 1,
                 "model.pooling": "cls", "model.max_length": 16, "distill.teacher": seq2seq_teacher,
                 "distill.student_layers": 1, "distill.pairs": pairs, "distill.lm_weight": 1.0,
                 "eval.sts": f"[{sts}]", "eval.every": 1, "save_every": 1, "report_to": "none"}
    monkeypatch.setattr(sys, "argv", ["distill.py", *(f"{k}={v}" for k, v in overrides.items())])
    with pytest.raises(SystemExit) as exit_code:
        runpy.run_path(str(REPO / "recipes" / "distill.py"), run_name="__main__")
    assert exit_code.value.code == 0
    final = out / "final"
    assert json.loads((final / "luse.json").read_text())["generation"] == "BertForMaskedLM"
    trained = load_seq2seq(final)  # a generator again, with the head it was trained with
    assert not trained.new_lm_head and trained.backbone.config.num_hidden_layers == 1
    teacher_head = load_seq2seq(seq2seq_teacher).lm_head.predictions.transform.dense.weight
    assert not torch.equal(trained.lm_head.predictions.transform.dense.weight, teacher_head)  # trained
    tokenizer, batch, logits, vector = plain_generator_outputs(final, BertForMaskedLM, BertModel)
    assert logits.shape[-1] == tokenizer.vocab_size and torch.isfinite(logits).all()
    torch.testing.assert_close(vector, trained.eval()(**batch), atol=1e-5, rtol=1e-5)
    assert (out / "best" / "luse.json").is_file() and (out / "checkpoints" / "step-00000002").is_dir()
