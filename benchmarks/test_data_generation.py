"""How long the accuracy study's generated data takes to build (``pytest benchmarks/test_data_generation.py``).

A speed figure, so it lives here and not in the unit tests: the study generates its splits once per run.
"""

from vlpbench.study.data import DatasetConfig, SceneConfig, SyntheticData


def test_generate_2000_scenes(benchmark):
    cfg = DatasetConfig(scene=SceneConfig(canvas=64), n_train=2000, n_val=100, n_test=100)
    data = benchmark.pedantic(SyntheticData, args=(cfg,), rounds=3, iterations=1)
    assert len(data.split("train")) == 2000
