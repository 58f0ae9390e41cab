"""Shared test settings: one torch thread (the tests use tiny tensors; threads only contend), no hub access."""
import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)
