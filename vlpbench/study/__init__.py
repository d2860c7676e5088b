"""The offline accuracy study: generated data, objectives and losses, the trainer, the detector stage,
evaluation on generated and real data, and the study runner.

Nothing here is imported by the harness; the study builds models through the registry and writes
``kind: "accuracy"`` records through the store.
"""
