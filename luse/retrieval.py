"""Stable import path (the README documents ``luse.retrieval``: encode_texts, build_index, search, save_index, load_index): the code lives in
:mod:`luse.eval.retrieval`."""

from luse.eval.retrieval import *  # noqa: F403
