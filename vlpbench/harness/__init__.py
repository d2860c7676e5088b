"""The shared measurement harness: stage timer, protocol, statistics, environment, memory, FLOPs.

It knows nothing about any particular model: it times a callable ``fn(stage)`` that runs one
iteration and passes ``stage`` down to the model (see :mod:`vlpbench.stages`).
"""
