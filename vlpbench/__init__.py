"""vlpbench: where the time goes in vision-and-language pretraining architectures.

Importing this package is cheap and changes no global state; heavy modules (torch
models, the harness, reporting) are imported where they are used.
"""

__version__ = "0.1.0"
