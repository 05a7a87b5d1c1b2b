"""Small classification data sets for training through workers: ``digits`` or an .npz file.

numpy only; scikit-learn (for ``digits``, which ships inside the package: nothing is
downloaded) is imported only when asked for, since it is not a dependency of the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interop_runtime.wire.errors import BadArgumentError


@dataclass(frozen=True)
class Split:
    """Features float32 (n, ...) and int64 class ids (n,), for training and validation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(initial=0))) + 1

    def describe(self) -> str:
        return (f"{len(self.x_train)} train / {len(self.x_val)} held out, "
                f"x {self.x_train.shape[1:]}, {self.classes} classes")


def stratified_split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int = 0) -> Split:
    """Hold out ``val_fraction`` of every class (at least one sample when it has two)."""
    if not 0.0 < val_fraction < 1.0:
        raise BadArgumentError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(max(round(len(idx) * val_fraction), 1), len(idx) - 1)  # both sides get some
        val.append(idx[:k])
    held = np.zeros(len(y), bool)
    held[np.concatenate(val)] = True
    train_idx = rng.permutation(np.flatnonzero(~held))
    val_idx = np.flatnonzero(held)
    return Split(_features(x[train_idx]), _labels(y[train_idx]),
                 _features(x[val_idx]), _labels(y[val_idx]))


def digits(val_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits (1797 images, 10 classes) as 64 features in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits data set needs scikit-learn: pip install scikit-learn "
                          "(or pass --data FILE.npz with arrays x and y)") from exc
    data = load_digits()
    return stratified_split(data.data / 16.0, data.target, val_fraction, seed)


def from_npz(path: str | Path, val_fraction: float = 0.25, seed: int = 0) -> Split:
    """Arrays ``x`` and ``y`` (and optionally ``x_val``, ``y_val``) from an .npz file,
    read without pickle: an .npz from elsewhere cannot run code here."""
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("x", "y") if k not in f.files]
        if missing:
            raise BadArgumentError(f"{path} has no array(s) {', '.join(missing)} (it has: "
                             f"{', '.join(f.files) or 'none'})")
        if "x_val" in f.files and "y_val" in f.files:
            return Split(_features(f["x"]), _labels(f["y"]),
                         _features(f["x_val"]), _labels(f["y_val"]))
        return stratified_split(f["x"], f["y"], val_fraction, seed)


def load(source: str, val_fraction: float = 0.25, seed: int = 0) -> Split:
    """``digits`` or the path of an .npz file."""
    if source == "digits":
        return digits(val_fraction, seed)
    if not Path(source).is_file():
        raise FileNotFoundError(f"data {source!r} is neither 'digits' nor an existing .npz file")
    return from_npz(source, val_fraction, seed)


def _features(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.all(y == np.round(y))):
        raise BadArgumentError(f"labels must be a 1-d array of class ids, got {y.dtype} {y.shape}")
    return np.ascontiguousarray(y, dtype=np.int64)
