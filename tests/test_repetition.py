"""ESimCSE's word repetition: views that double a few units, so positives differ in length."""

import random

import pytest
from luse.augment.repetition import repeat_words, repetition_views

from luse.config import load_config
from luse.errors import InputError
from luse.objectives.views import ViewsObjective


def undouble(view: str, original: str) -> bool:
    """``view`` is ``original`` with some units written twice (a greedy match, enough for these texts)."""
    i = 0
    for ch in view:
        if i < len(original) and ch == original[i]:
            i += 1
    return i == len(original)


def test_chinese_units_are_characters_and_the_count_is_bounded():
    text = "今天天气很好，我们去公园散步吧。"
    rng = random.Random(0)
    views = [repeat_words(text, rng) for _ in range(200)]
    extra = [len(v) - len(text) for v in views]
    assert min(extra) == 0 and max(extra) == int(0.32 * len(text))  # k in 0..max(2, int(0.32 n))
    assert all(undouble(v, text) for v in views)
    assert " " not in "".join(views)  # characters and punctuation double without a space


def test_words_double_with_a_space_and_whitespace_is_kept():
    text = "A man  is playing a guitar."  # no word follows itself, so doubles are the view's own
    views = [repeat_words(text, random.Random(seed)) for seed in range(50)]
    for view in views:
        words = view.split()
        assert [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]] == text.split()
        assert "  is" in view
    assert any(len(v.split()) > len(text.split()) for v in views)


def test_seeded_and_degenerate_inputs():
    assert repeat_words("春眠不觉晓", random.Random(3)) == repeat_words("春眠不觉晓", random.Random(3))
    assert repeat_words("   ", random.Random(0)) == "   "
    assert repetition_views(0.32)("好", 2, random.Random(0))[0] in ("好", "好好")


def test_views_objective_adds_repetition_rows(tiny_bert):
    from transformers import AutoTokenizer

    config = load_config(None, ["views.dropout=0", "views.repeat=1", "views.eda=0"])
    objective = ViewsObjective(AutoTokenizer.from_pretrained(str(tiny_bert)), 32, config.views, config.loss)
    assert objective.num_views == 2
    batch = objective.collate(["今天天气很好，我们去公园散步吧。", "明天会下雨吗"], random.Random(1))
    assert batch["input_ids"].shape[0] == 4
    lengths = batch["attention_mask"].sum(1)
    assert lengths[1] >= lengths[0] and lengths[3] >= lengths[2]


def test_config_checks_the_repetition_keys():
    with pytest.raises(InputError, match="repeat"):
        load_config(None, ["views.repeat=-1"])
    with pytest.raises(InputError, match="dup_rate"):
        load_config(None, ["views.dup_rate=1.5"])
