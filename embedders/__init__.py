"""Visual and text embedders, installed as ``vlpbench.embedders``."""
