"""train_step / distill_step / evaluate / logits for a torch worker (see interop_runtime.trainspec).

The optimizer is created once, at load, and lives as long as the worker, so its state
(Adam's moments, SGD momentum) carries over from one CONTROL call to the next. A step
switches the model to train() and back to eval(): ``forward`` keeps its inference
behaviour (dropout off, batch-norm running statistics) between steps. Steps run with
autograd on; the other functions under inference_mode, like forward.

``optimizer_state`` / ``load_optimizer_state`` carry ``optimizer.state_dict()`` flattened:
each tensor as ``state/<parameter name>/<slot>`` (e.g. ``state/0.weight/exp_avg``), the
rest (param_groups without their indices, non-tensor slots, the step count) as JSON.
Loading keeps the worker's own hyper-parameters: its config says how it trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interop_runtime import (
    FunctionSpec,
    ShapeMismatchError,
    UnknownFunctionError,
    UnknownTargetError,
    UnsupportedError,
    trainspec,
)

TrainingConfig = trainspec.TrainingConfig  # the public API carries the module

from .convert import to_numpy, to_tensor


def make_optimizer(model: torch.nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UnsupportedError("training: the model has no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def distill_loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None,
                 temperature: float, alpha: float) -> torch.Tensor:
    """alpha·T²·KL(softmax(teacher/T) || softmax(student/T)) + (1-alpha)·CE(student, labels)."""
    hard = F.cross_entropy(logits, labels)
    if soft is None or alpha == 0.0:
        return hard
    t = temperature
    # T² keeps the soft term's gradients on the same scale as CE's when T changes (Hinton)
    kl = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(soft / t, dim=-1),
                  reduction="batchmean", log_target=True)
    return alpha * t * t * kl + (1.0 - alpha) * hard


class TorchTrainer:
    def __init__(self, model: torch.nn.Module, device: torch.device, cfg: TrainingConfig,
                 forward: FunctionSpec) -> None:
        self.model, self.device, self.cfg = model, device, cfg
        x = forward.inputs[0] if forward.inputs else None
        y = forward.outputs[0] if forward.outputs else None
        self.specs = {f.name: f for f in trainspec.functions(x, y)}
        logits = self.specs[trainspec.LOGITS].outputs[0]
        self.classes = logits.shape[-1] if logits.shape else None
        self.optimizer = make_optimizer(model, cfg)
        self.steps = 0

    def describe(self) -> list[FunctionSpec]:
        return list(self.specs.values())

    def call(self, function: str, inputs: Mapping[str, np.ndarray], args: Mapping[str, Any]
             ) -> dict[str, np.ndarray]:
        if function not in self.specs:
            raise UnknownFunctionError(f"no training function {function!r}", field="function")
        if function == trainspec.OPTIMIZER_STATE:
            return self.get_state()
        if function == trainspec.LOAD_OPTIMIZER_STATE:
            self.set_state(trainspec.state_tensors(inputs), args.get("meta"))
            return trainspec.scalars(step=self.steps)
        if function == trainspec.LOGITS:
            with torch.inference_mode():
                return {"logits": self.model(self._tensor(inputs["x"])).float().cpu().numpy()}
        trainspec.check_batch(inputs, self.classes)
        x, labels = self._tensor(inputs["x"]), self._tensor(inputs["labels"])
        if function == trainspec.EVALUATE:
            with torch.inference_mode():
                logits = self.model(x)
                loss = F.cross_entropy(logits, labels)
            return trainspec.scalars(loss=loss.item(), accuracy=_accuracy(logits, labels))
        soft_in = inputs.get("soft_targets")
        temperature, alpha = trainspec.distill_args(args, with_soft=soft_in is not None)
        soft = None if soft_in is None else self._tensor(soft_in)
        return self._step(x, labels, soft, temperature, alpha)

    def _step(self, x: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None,
              temperature: float, alpha: float) -> dict[str, np.ndarray]:
        self.model.train()
        try:
            with torch.enable_grad():
                logits = self.model(x)
                loss = distill_loss(logits, labels, soft, temperature, alpha)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        finally:
            self.model.eval()
        self.steps += 1
        # accuracy of the logits the step was computed from (before the update), as Keras does
        return trainspec.scalars(loss=loss.item(), accuracy=_accuracy(logits.detach(), labels),
                                 step=self.steps)

    # --- optimizer state --------------------------------------------------------------------

    def _names(self) -> list[str]:
        # the optimizer's parameter indices follow make_optimizer's order
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def get_state(self) -> dict[str, np.ndarray]:
        sd = self.optimizer.state_dict()
        names = self._names()
        out: dict[str, np.ndarray] = {}
        scalars: dict[str, Any] = {}
        for index, slots in sd["state"].items():
            for slot, value in slots.items():
                key = f"{names[index]}/{slot}"
                if torch.is_tensor(value):
                    out[trainspec.STATE_PREFIX + key] = to_numpy(value.detach().cpu().clone())
                elif value is None or isinstance(value, (bool, int, float)):
                    scalars[key] = value
        groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
        meta = {"framework": "torch", "optimizer": self.cfg.optimizer, "steps": self.steps,
                "hyper": groups, "scalars": scalars}
        return {"meta": trainspec.meta_array(meta), **out,
                **trainspec.scalars(step=self.steps)}

    def set_state(self, tensors: Mapping[str, np.ndarray], meta: Any) -> None:
        if not isinstance(meta, dict):
            raise UnsupportedError("load_optimizer_state needs arg meta (optimizer_state's "
                                   "JSON)", field="meta")
        if meta.get("optimizer") != self.cfg.optimizer:
            raise UnsupportedError(f"the optimizer state is for {meta.get('optimizer')!r}, "
                                   f"this worker trains with {self.cfg.optimizer!r}",
                                   field="meta.optimizer")
        names = self._names()
        index = {n: i for i, n in enumerate(names)}
        shapes = {n: tuple(p.shape) for n, p in self.model.named_parameters()}
        current = self.optimizer.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():  # check everything before loading anything
            name, _, slot = key.rpartition("/")
            if name not in index or not slot:
                raise UnknownTargetError(f"optimizer state {key!r}: the model has no trainable "
                                         f"parameter {name!r}", field=key)
            now = current["state"].get(index[name], {}).get(slot)
            allowed = {tuple(now.shape)} if torch.is_tensor(now) else {shapes[name], ()}
            if tuple(value.shape) not in allowed:
                raise ShapeMismatchError(f"optimizer state {key!r} has shape "
                                         f"{tuple(value.shape)}, parameter {name!r} needs "
                                         f"{' or '.join(map(str, sorted(allowed)))}", field=key)
            # a copy: the input frames are read-only and the optimizer writes in place
            state.setdefault(index[name], {})[slot] = torch.from_numpy(np.array(value))
        for key, value in dict(meta.get("scalars") or {}).items():
            name, _, slot = str(key).rpartition("/")
            if name in index:
                state.setdefault(index[name], {})[slot] = value
        # load_state_dict casts the moments to each parameter's dtype and device
        self.optimizer.load_state_dict({"state": state,
                                        "param_groups": current["param_groups"]})
        self.steps = int(meta.get("steps", 0))

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        # inputs stay read-only views of the frames: nothing here writes into them
        return to_tensor(array, self.device)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == labels).float().mean().item()


def trainer_from_config(config: Mapping[str, Any], model: torch.nn.Module,
                        exported: object | None, device: torch.device, forward: FunctionSpec,
                        taken: Any = ()) -> TorchTrainer | None:
    """A TorchTrainer when the worker config has a ``training:`` section, else None."""
    cfg = trainspec.parse_config(config)
    if cfg is None:
        return None
    if exported is not None:
        raise UnsupportedError("training: an exported program is frozen at export time; "
                               "load the model from a factory or TorchScript to train it")
    clash = sorted(set(taken) & set(trainspec.FUNCTIONS))
    if clash:
        raise ValueError(f"training adds functions {', '.join(trainspec.FUNCTIONS)}, but the "
                         f"worker already offers {', '.join(clash)}")
    return TorchTrainer(model, device, cfg, forward)
