"""luse: pretrain sentence encoders without labels (LUSE / SimCSE family), Chinese first."""

__version__ = "0.1.0"
