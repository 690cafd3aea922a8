"""Training: the loop over accelerate (``loop``), one micro-batch step (``step``), GradCache, checkpoints,
precision and threads, graceful signals, and how a recipe's run ends (``outcome``)."""

from luse.train.loop import TrainResult, train
from luse.train.outcome import exit_code

__all__ = ["TrainResult", "exit_code", "train"]
