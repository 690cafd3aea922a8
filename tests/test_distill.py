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
