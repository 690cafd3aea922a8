"""Stable import path (the README documents ``luse.seq2seq``: load_seq2seq): the code lives in
:mod:`luse.model.seq2seq`."""

from luse.model.seq2seq import *  # noqa: F403
