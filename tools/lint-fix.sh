#!/usr/bin/env bash
# One-time tree-wide lint fix and reformat with ruff (settings in pyproject.toml), for after every open branch
# is merged: it rewrites most files, so running it while branches are in flight makes each of them conflict.
# Afterwards `make lint` passes; anything ruff cannot fix is printed at the end and the script exits non-zero.
# `make format` runs it (after installing the lint extra); once the tree is formatted it is the everyday habit.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff() { "${PYTHON:-.venv/bin/python}" -m ruff "$@"; }

# Safe fixes: PEP 585 / 604 annotations (Dict -> dict, Optional[X] -> X | None), import order, unused imports.
ruff check --fix --exit-zero --silent .
# Reviewed unsafe fixes: an unused loop variable or unpacked local gets a leading underscore (B007, F841).
ruff check --fix --unsafe-fixes --select B007,F841 --exit-zero --silent .
ruff format --quiet .
# What is left needs a hand (typically a string too long for the formatter to split).
ruff check .
ruff format --check .
