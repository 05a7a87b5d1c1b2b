"""Small seeded Keras models for tests and examples (``factory: interop_tensorflow.models:...``).

Every layer and Input is named so that parameter paths and tensor names are the
same in every process, whatever else Keras built there before (its automatic
names carry a per-process counter). The tiny models seed each initializer, so
building one touches no global random state.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
from keras import initializers, layers


def _init(seed: int, stddev: float | None = None) -> initializers.Initializer:
    if stddev is None:
        return initializers.GlorotUniform(seed=seed)
    return initializers.RandomNormal(stddev=stddev, seed=seed)


def tiny_mlp(seed: int = 0, in_dim: int = 8, hidden: int = 16, out: int = 4) -> keras.Model:
    """x (batch, in_dim) -> Dense relu -> Dense -> y (batch, out). Biases are non-zero
    so that every parameter changes the output."""
    x = keras.Input((in_dim,), name="x")
    h = layers.Dense(hidden, activation="relu", name="hidden", kernel_initializer=_init(seed),
                     bias_initializer=_init(seed + 1, 0.1))(x)
    y = layers.Dense(out, name="y", kernel_initializer=_init(seed + 2),
                     bias_initializer=_init(seed + 3, 0.1))(h)
    return keras.Model(x, y, name="tiny_mlp")


def tiny_cnn(seed: int = 0, image_size: int = 8, channels: int = 3, classes: int = 5
             ) -> keras.Model:
    """image (batch, H, W, C) NHWC -> Conv2D, BatchNorm, ReLU, MaxPool, Dense -> logits."""
    x = keras.Input((image_size, image_size, channels), name="image")
    h = layers.Conv2D(4, 3, padding="same", name="conv", kernel_initializer=_init(seed),
                      bias_initializer=_init(seed + 1, 0.1))(x)
    # BatchNorm adds non-trainable parameters and differs between training and inference
    h = layers.BatchNormalization(name="bn", beta_initializer=_init(seed + 2, 0.1))(h)
    h = layers.ReLU(name="relu")(h)
    h = layers.MaxPooling2D(2, name="pool")(h)
    h = layers.Flatten(name="flatten")(h)
    y = layers.Dense(classes, name="logits", kernel_initializer=_init(seed + 3),
                     bias_initializer=_init(seed + 4, 0.1))(h)
    return keras.Model(x, y, name="tiny_cnn")


def resnet50_features(seed: int = 0, image_size: int = 224) -> keras.Model:
    """ResNet50 without its classifier: image (batch, S, S, 3) NHWC -> features (batch, 2048).

    Random weights (weights=None downloads nothing), the same for the same seed:
    keras.applications takes no initializer seeds, so this sets Keras' global seed."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((image_size, image_size, 3), name="image")
    return keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                       input_tensor=image)


def mlp_classifier(seed: int = 0, in_dim: int = 64, hidden: int = 128, classes: int = 10,
                   dropout: float = 0.0) -> keras.Model:
    """x (batch, in_dim) -> Dense relu [-> Dropout] -> Dense -> logits (batch, classes).
    The digits teacher of examples/distill; zero biases, as a classifier usually starts."""
    x = keras.Input((in_dim,), name="x")
    h = layers.Dense(hidden, activation="relu", name="hidden",
                     kernel_initializer=_init(seed))(x)
    if dropout:
        h = layers.Dropout(dropout, seed=seed + 1, name="dropout")(h)
    y = layers.Dense(classes, name="logits", kernel_initializer=_init(seed + 2))(h)
    return keras.Model(x, y, name="mlp_classifier")
