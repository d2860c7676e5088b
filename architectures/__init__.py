"""Interaction schemes, heads and whole architectures, installed as ``vlpbench.architectures``."""
