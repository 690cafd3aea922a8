"""The README is what a new user runs: its commands point at nothing only developers have (../shared, a sibling
checkout) and it pins no package versions that drift from what is installed (issue 16, case 17)."""

import re
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_points_at_no_sibling_checkout():
    assert "../shared" not in README and "/work/shared" not in README


def test_readme_pins_no_package_versions():
    pinned = re.findall(r"\b(accelerate|torch|transformers|sentence-transformers|datasets|faiss(?:-cpu|-gpu)?|"
                        r"numpy|jieba|gensim|tokenizers)\s+v?\d+\.\d+", README)
    assert not pinned, f"versions belong in pyproject.toml, not prose: {pinned}"


def test_readme_says_where_chinese_sts_b_comes_from():
    assert "shibing624/nli_zh" in README and "text2vec" in README
