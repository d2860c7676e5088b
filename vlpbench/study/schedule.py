"""Learning-rate schedule shared by the trainer and the detector stage."""

import math
from collections.abc import Callable


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier for ``LambdaLR``: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f
