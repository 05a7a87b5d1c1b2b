"""Importing TensorFlow for one worker and pinning it to the worker's device.

Device settings only take effect before TensorFlow initialises its devices,
which happens on the first op, so ``setup`` runs before any model is built.
A worker hosts one model, so process-wide settings are ours to make.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from interop_runtime import Device, DeviceUnavailable

log = logging.getLogger("interop.tensorflow")


def import_tensorflow() -> ModuleType:
    """Import TensorFlow quietly; ImportError (turned into an install hint) if missing."""
    # 2 = warnings and errors only; an operator's own setting wins
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _choose_keras_backend()  # importing TensorFlow may import Keras
    import tensorflow as tf

    return tf


def import_keras() -> ModuleType:
    """Keras 3 on the TensorFlow backend, whatever KERAS_BACKEND says elsewhere."""
    _choose_keras_backend()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"Keras was already imported with the {keras.backend.backend()!r} "
                           "backend; the tensorflow plugin needs KERAS_BACKEND=tensorflow")
    return keras


def _choose_keras_backend() -> None:
    # the worker process hosts only this plugin: another backend here is a mistake
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "tensorflow"


def setup(tf: Any, device: Device, memory_limit_mb: int | None = None) -> str:
    """Make only the worker's device visible; return the tf.device name to compute on.

    On the CPU GPUs are hidden so TensorFlow does not reserve their memory. On a
    GPU, memory grows on demand (or is capped at ``memory_limit_mb``) so several
    workers can share one card. A missing GPU raises DeviceUnavailable."""
    gpus = tf.config.list_physical_devices("GPU")
    if not device.is_gpu:
        _configure(lambda: tf.config.set_visible_devices([], "GPU"))
        return "/CPU:0"
    if device.index >= len(gpus):
        # no square brackets: the worker CLI prints this through rich, which eats [tags]
        build = "" if tf.test.is_built_with_cuda() else (
            "; this TensorFlow build has no CUDA support (tensorflow-cpu): a GPU worker "
            "needs the `tensorflow` package with its `and-cuda` extra instead")
        raise DeviceUnavailable(f"device {device} is not available: TensorFlow sees "
                                f"{len(gpus)} GPU(s){build}")
    gpu = gpus[device.index]

    def pin() -> None:
        tf.config.set_visible_devices([gpu], "GPU")
        if memory_limit_mb:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=int(memory_limit_mb))])
        else:
            tf.config.experimental.set_memory_growth(gpu, True)

    _configure(pin)
    visible = tf.config.get_visible_devices("GPU")
    logical = tf.config.list_logical_devices("GPU")  # initialises the runtime
    if gpu not in visible or visible.index(gpu) >= len(logical):
        raise DeviceUnavailable(f"device {device} ({gpu.name}) could not be initialised by "
                                f"TensorFlow (visible: {[d.name for d in visible]})")
    return f"/GPU:{visible.index(gpu)}"


def _configure(change: Callable[[], None]) -> None:
    try:
        change()
    except RuntimeError as exc:  # devices already initialised: only when TF is shared in-process
        log.warning("TensorFlow devices were already initialised in this process; "
                    "keeping their settings (%s)", exc)
