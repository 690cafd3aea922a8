"""Stable import path (the README documents ``luse.generation``: gen_synonyms): the code lives in
:mod:`luse.eval.generation`."""

from luse.eval.generation import *  # noqa: F403
