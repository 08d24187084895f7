"""Shared test set-up: makes ``tests/zoo.py`` importable and keeps torch small and quiet."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

torch.set_num_threads(min(2, torch.get_num_threads()))
