"""Small HuggingFace BERT and GPT-2 built from configs with seeded random weights (nothing
is downloaded), as torch worker factories and as TorchScript files.

    factory: "hf_models:bert"       # with examples/compat on the worker's PYTHONPATH
    kwargs: {seed: 0}
    inputs: [{name: input_ids, dtype: int64, shape: [null, 16]}]

``save_torchscript("bert", path)`` traces the same model (``torchscript=True`` config)
for the plugin's ``torchscript:`` source.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

SEQ = 16  # example sequence length for tracing


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)


def bert(seed: int = 0, torchscript: bool = False) -> torch.nn.Module:
    """BertModel: hidden 128, 2 layers, 2 heads, intermediate 256, vocabulary 30522."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, torchscript=torchscript)
    return BertModel(config).eval()


def gpt2(seed: int = 0, torchscript: bool = False) -> torch.nn.Module:
    """GPT2Model: n_embd 128, 2 layers, 2 heads, vocabulary 50257 (Conv1D projections)."""
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    config = GPT2Config(n_embd=128, n_layer=2, n_head=2, use_cache=False,
                        torchscript=torchscript)
    return GPT2Model(config).eval()


def save_torchscript(name: str, path: str | Path, seed: int = 0) -> Path:
    """Trace ``bert`` or ``gpt2`` on (2, SEQ) token ids and save it with torch.jit.save."""
    _quiet()
    model: Any = {"bert": bert, "gpt2": gpt2}[name](seed=seed, torchscript=True)
    ids = torch.zeros(2, SEQ, dtype=torch.long)
    traced = torch.jit.trace(model, (ids,), strict=False)
    torch.jit.save(traced, str(path))
    return Path(path)


if __name__ == "__main__":
    import sys

    for which in sys.argv[1:] or ["bert", "gpt2"]:
        print(save_torchscript(which, f"{which}.ts"))
