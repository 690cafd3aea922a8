"""Similarity distillation: the loss against a direct loop formula, the objective on a tiny teacher,
student initialisation from the teacher's lower layers, and a 2-step ``accelerate launch``."""

from __future__ import annotations

import math

import pytest
import torch

from luse.errors import InputError
from luse.losses import LOSSES, SimilarityDistillLoss, similarity_distill_loss

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
    assert LOSSES["distill"] is SimilarityDistillLoss
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
    from luse.distill import DistillObjective, load_teacher, student_from_teacher

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

    from luse.distill import DistillObjective, load_teacher
    from luse.encoder import SentenceEncoder

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
    from luse.distill import load_teacher, student_from_teacher

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

    from luse.distill import load_teacher, student_from_teacher

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
    from luse.distill import load_teacher

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
