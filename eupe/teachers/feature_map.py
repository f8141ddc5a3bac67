"""Teachers around any convolutional network: patches = a feature map, summary = its global average pool.

The maps are taken from the network's return value or, for a named stage, by a forward hook on that submodule,
so any torch CNN works without changing its code.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..loading import load_into, read_state_dict
from .base import Teacher, TeacherOutput
from .common import TeacherError, finalise, global_pool, resolve_callable, tokens_to_grid
from .spec import TeacherSpec

DEFAULT_INPUT_SIZE = 224


class FeatureMapTeacher(Teacher):
    """Runs ``getattr(network, call)(x)``; patches from ``patch_layer`` (or the result), summary pooled."""

    def __init__(self, name: str, network: nn.Module, *, input_size: int | tuple[int, int],
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, call: str = "forward",
                 patch_layer: str | None = None, summary_layer: str | None = None, autocast: bool = True) -> None:
        super().__init__(name, input_size=input_size, mean=mean, std=std, autocast=autocast)
        self.network = network
        if not callable(getattr(network, call, None)):
            raise TeacherError(f"Teacher {name!r}: the network ({type(network).__name__}) has no callable {call!r}")
        self.call = call
        self.patch_layer = patch_layer
        self.summary_layer = summary_layer
        self.layers = sorted({patch_layer, summary_layer} - {None})
        for layer in self.layers:
            self._submodule(layer)  # fail at build time on a wrong name

    def _submodule(self, layer: str) -> nn.Module:
        try:
            return self.network.get_submodule(layer)
        except AttributeError as err:
            names = [n for n, _ in self.network.named_children()]
            raise TeacherError(f"Teacher {self.name!r}: no submodule {layer!r} in the network "
                               f"(top-level children: {names})") from err

    def _map(self, layer: str | None, result: Any, captured: dict[str, Any]) -> Tensor:
        value = result if layer is None else captured.get(layer)
        if value is None:
            raise TeacherError(f"Teacher {self.name!r}: submodule {layer!r} did not run during {self.call!r}")
        if not isinstance(value, Tensor):
            raise TeacherError(f"Teacher {self.name!r}: {layer or self.call!r} returned a {type(value).__name__}, "
                               f"not a feature tensor; set patch_layer to a submodule that outputs one")
        return tokens_to_grid(value, self.name)

    def features(self, x: Tensor) -> TeacherOutput:
        captured: dict[str, Any] = {}
        # Hooks live only for this call, so copies of the teacher never share captured maps.
        handles = [self._submodule(layer).register_forward_hook(partial(_capture, captured, layer))
                   for layer in self.layers]
        try:
            result = getattr(self.network, self.call)(x)
        finally:
            for handle in handles:
                handle.remove()
        patches = self._map(self.patch_layer, result, captured)
        same = self.summary_layer in (None, self.patch_layer)
        pooled = patches if same else self._map(self.summary_layer, result, captured)
        return TeacherOutput(global_pool(pooled), patches)


def _capture(store: dict[str, Any], layer: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
    store[layer] = output


def load_network(network: nn.Module, weights: str, *, teacher: str) -> nn.Module:
    """Strictly loads the state dict at ``weights`` into ``network`` (every key and shape must match)."""
    load_into(network, read_state_dict(weights), model_name=teacher, source=weights)
    return network


def build_torch_cnn_teacher(spec: TeacherSpec) -> Teacher:
    """``spec.model`` = ``package.module:factory`` building the network, ``spec.weights`` = its state dict."""
    name = spec.display_name
    factory = resolve_callable(spec.model, teacher=name)
    network = factory(**spec.model_kwargs)
    if not isinstance(network, nn.Module):
        raise TeacherError(f"Teacher {name!r}: {spec.model} returned a {type(network).__name__}, not an nn.Module")
    if spec.weights is None:
        raise TeacherError(f"Teacher {name!r} (torch_cnn) needs weights: the path of the network's state dict")
    load_network(network, spec.weights, teacher=name)
    teacher = FeatureMapTeacher(name, network, input_size=spec.input_size or DEFAULT_INPUT_SIZE,
                                mean=spec.mean or IMAGENET_MEAN, std=spec.std or IMAGENET_STD, call=spec.call,
                                patch_layer=spec.patch_layer, summary_layer=spec.summary_layer,
                                autocast=spec.autocast)
    return finalise(teacher)
