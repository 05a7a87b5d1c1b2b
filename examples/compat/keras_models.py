"""A small seeded Keras model with Conv2D, BatchNorm, GRU, LSTM and Dropout, for the
compatibility checks of an in-code model against its SavedModel and .keras twins.

    factory: "keras_models:conv_rnn"    # with examples/compat on the worker's PYTHONPATH
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
from keras import initializers, layers


def conv_rnn(seed: int = 0, size: int = 8, channels: int = 3, classes: int = 5) -> keras.Model:
    """image (batch, size, size, C) -> Conv2D, BatchNorm, ReLU -> rows as a sequence ->
    GRU -> Dropout -> LSTM -> Dense -> logits. Every layer named, every initializer seeded."""
    def init(k: int) -> initializers.Initializer:
        return initializers.GlorotUniform(seed=seed + k)

    x = keras.Input((size, size, channels), name="image")
    h = layers.Conv2D(4, 3, padding="same", name="conv", kernel_initializer=init(0))(x)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.ReLU(name="relu")(h)
    h = layers.Reshape((size, size * 4), name="rows")(h)
    h = layers.GRU(6, return_sequences=True, name="gru", kernel_initializer=init(1),
                   recurrent_initializer=init(2))(h)
    h = layers.Dropout(0.2, seed=seed, name="drop")(h)
    h = layers.LSTM(5, name="lstm", kernel_initializer=init(3), recurrent_initializer=init(4))(h)
    y = layers.Dense(classes, name="logits", kernel_initializer=init(5))(h)
    return keras.Model(x, y, name="conv_rnn")


def save_twins(directory: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """(SavedModel directory, .keras file) of ``conv_rnn(seed)``."""
    directory = Path(directory)
    model = conv_rnn(seed)
    saved, keras_file = directory / "conv_rnn_saved", directory / "conv_rnn.keras"
    model.export(str(saved), verbose=False)
    model.save(str(keras_file))
    return saved, keras_file
