"""train_step / distill_step / evaluate / logits for a Keras model in a TensorFlow worker
(the contract: interop_runtime.trainspec).

The Keras optimizer is built once, at load, over the model's trainable variables and
lives as long as the worker, so its slots carry over from one CONTROL call to the next.
Steps call the model with training=True under a GradientTape; each step kind is one
tf.function with a full input signature, traced once for every batch size, with
temperature and alpha as tensors so that changing them does not retrace.

``optimizer_state`` / ``load_optimizer_state`` carry the optimizer's variables (its
iteration count and slots, e.g. ``state/adam/hidden_kernel_momentum``) by path, and its
config as JSON. The learning rate variable stays out: the worker's config sets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from interop_runtime import (
    FunctionSpec,
    ShapeMismatchError,
    UnknownFunctionError,
    UnknownTargetError,
    UnsupportedError,
    trainspec,
)

TrainingConfig = trainspec.TrainingConfig  # the public API carries the module

from .runtime import import_keras


def make_optimizer(keras: Any, cfg: TrainingConfig) -> Any:
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay or None)
    return keras.optimizers.Adam(learning_rate=cfg.lr, weight_decay=cfg.weight_decay or None)


class KerasTrainer:
    def __init__(self, tf: Any, model: Any, cfg: TrainingConfig, forward: FunctionSpec,
                 device: str) -> None:
        self.tf, self.model, self.cfg, self.device = tf, model, cfg, device
        if len(forward.inputs) != 1 or len(forward.outputs) != 1:
            raise UnsupportedError("training needs a model with one input and one output "
                                   f"(this one has {len(forward.inputs)} and "
                                   f"{len(forward.outputs)})")
        self.specs = {f.name: f for f in trainspec.functions(forward.inputs[0],
                                                             forward.outputs[0])}
        logits = self.specs[trainspec.LOGITS].outputs[0]
        self.classes = logits.shape[-1] if logits.shape else None
        self.variables = list(model.trainable_variables)
        if not self.variables:
            raise UnsupportedError("training: the model has no trainable variables")
        self.optimizer = make_optimizer(import_keras(), cfg)
        self.optimizer.build(self.variables)  # slots now, not inside the first trace
        self.steps = 0
        self._compile()

    def _compile(self) -> None:
        tf, x_spec = self.tf, self.specs[trainspec.TRAIN_STEP].inputs[0]
        x = tf.TensorSpec(x_spec.shape, x_spec.dtype)
        labels = tf.TensorSpec([None], tf.int64)
        soft = tf.TensorSpec([None, self.classes], tf.float32)
        scalar = tf.TensorSpec([], tf.float32)
        self._hard = tf.function(self._hard_step, input_signature=[x, labels])
        self._distill = tf.function(self._distill_step,
                                    input_signature=[x, labels, soft, scalar, scalar])
        self._evaluate = tf.function(self._eval, input_signature=[x, labels])
        self._logits = tf.function(lambda x: self.model(x, training=False), input_signature=[x])

    # --- traced bodies ---------------------------------------------------------------------

    def _ce(self, logits: Any, labels: Any) -> Any:
        tf = self.tf
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    def _accuracy(self, logits: Any, labels: Any) -> Any:
        tf = self.tf
        return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.float32))

    def _apply(self, tape: Any, loss: Any) -> None:
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))

    def _hard_step(self, x: Any, labels: Any) -> tuple[Any, Any]:
        with self.tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = self._ce(logits, labels) + self._regularization()
        self._apply(tape, loss)
        return loss, self._accuracy(logits, labels)

    def _distill_step(self, x: Any, labels: Any, soft: Any, temperature: Any, alpha: Any
                      ) -> tuple[Any, Any]:
        tf = self.tf
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            log_t = tf.nn.log_softmax(soft / temperature)
            log_s = tf.nn.log_softmax(logits / temperature)
            # KL(teacher || student), mean over the batch ("batchmean", as torch computes it)
            kl = tf.reduce_mean(tf.reduce_sum(tf.exp(log_t) * (log_t - log_s), axis=-1))
            loss = (alpha * temperature * temperature * kl
                    + (1.0 - alpha) * self._ce(logits, labels) + self._regularization())
        self._apply(tape, loss)
        return loss, self._accuracy(logits, labels)

    def _eval(self, x: Any, labels: Any) -> tuple[Any, Any]:
        logits = self.model(x, training=False)
        return self._ce(logits, labels), self._accuracy(logits, labels)

    def _regularization(self) -> Any:
        losses = list(self.model.losses)  # kernel regularizers and add_loss terms
        return self.tf.add_n(losses) if losses else 0.0

    # --- the plugin's entry ----------------------------------------------------------------

    def describe(self) -> list[FunctionSpec]:
        return list(self.specs.values())

    def call(self, function: str, inputs: Mapping[str, np.ndarray], args: Mapping[str, Any]
             ) -> dict[str, np.ndarray]:
        if function not in self.specs:
            raise UnknownFunctionError(f"no training function {function!r}", field="function")
        tf = self.tf
        if function == trainspec.OPTIMIZER_STATE:
            return self.get_state()
        if function == trainspec.LOAD_OPTIMIZER_STATE:
            self.set_state(trainspec.state_tensors(inputs), args.get("meta"))
            return trainspec.scalars(step=self.steps)
        with tf.device(self.device):
            if function == trainspec.LOGITS:
                return {"logits": np.asarray(self._logits(tf.convert_to_tensor(inputs["x"])))}
            trainspec.check_batch(inputs, self.classes)
            x, labels = tf.convert_to_tensor(inputs["x"]), tf.convert_to_tensor(inputs["labels"])
            if function == trainspec.EVALUATE:
                loss, acc = self._evaluate(x, labels)
                return trainspec.scalars(loss=float(loss), accuracy=float(acc))
            soft = inputs.get("soft_targets")
            temperature, alpha = trainspec.distill_args(args, with_soft=soft is not None)
            if soft is None or alpha == 0.0:
                loss, acc = self._hard(x, labels)
            else:
                loss, acc = self._distill(x, labels, tf.convert_to_tensor(soft),
                                          tf.constant(temperature, tf.float32),
                                          tf.constant(alpha, tf.float32))
        self.steps += 1
        return trainspec.scalars(loss=float(loss), accuracy=float(acc), step=self.steps)


    # --- optimizer state --------------------------------------------------------------------

    def _slots(self) -> dict[str, Any]:
        return {v.path: v for v in self.optimizer.variables if v.name != "learning_rate"}

    def get_state(self) -> dict[str, np.ndarray]:
        tensors = {trainspec.STATE_PREFIX + path: np.asarray(v.numpy()).copy()
                   for path, v in self._slots().items()}
        config = {k: v for k, v in self.optimizer.get_config().items()
                  if v is None or isinstance(v, (bool, int, float, str))}
        meta = {"framework": "keras", "optimizer": self.cfg.optimizer, "steps": self.steps,
                "hyper": config}
        return {"meta": trainspec.meta_array(meta), **tensors,
                **trainspec.scalars(step=self.steps)}

    def set_state(self, tensors: Mapping[str, np.ndarray], meta: Any) -> None:
        if not isinstance(meta, dict):
            raise UnsupportedError("load_optimizer_state needs arg meta (optimizer_state's "
                                   "JSON)", field="meta")
        if meta.get("optimizer") != self.cfg.optimizer:
            raise UnsupportedError(f"the optimizer state is for {meta.get('optimizer')!r}, "
                                   f"this worker trains with {self.cfg.optimizer!r}",
                                   field="meta.optimizer")
        slots = self._slots()
        for path, value in tensors.items():  # check everything before assigning anything
            if path not in slots:
                raise UnknownTargetError(f"optimizer state {path!r}: this optimizer has no such "
                                         f"variable (it has {', '.join(slots)})", field=path)
            want = tuple(slots[path].shape)
            if tuple(value.shape) != want:
                raise ShapeMismatchError(f"optimizer state {path!r} has shape "
                                         f"{tuple(value.shape)}, the optimizer's is {want}",
                                         field=path)
        missing = sorted(set(slots) - set(tensors))
        if missing:
            raise UnknownTargetError(f"the optimizer state lacks {', '.join(missing)}",
                                     field=missing[0])
        with self.tf.device(self.device):
            for path, value in tensors.items():
                slots[path].assign(np.asarray(value, dtype=slots[path].dtype))
        self.steps = int(meta.get("steps", 0))


def trainer_from_config(config: Mapping[str, Any], tf: Any, loaded: Any, device: str
                        ) -> KerasTrainer | None:
    """A KerasTrainer when the worker config has a ``training:`` section, else None."""
    cfg = trainspec.parse_config(config)
    if cfg is None:
        return None
    keras = import_keras()
    if not isinstance(loaded.owner, keras.Model):
        raise UnsupportedError("training needs a Keras model (factory or keras_file); a "
                               "SavedModel signature has no trainable graph")
    clash = sorted(set(loaded.functions) & set(trainspec.FUNCTIONS))
    if clash:
        raise ValueError(f"training adds functions {', '.join(trainspec.FUNCTIONS)}, but the "
                         f"worker already offers {', '.join(clash)}")
    forward = loaded.functions["forward"].spec
    with tf.device(device):
        return KerasTrainer(tf, loaded.owner, cfg, forward, device)
