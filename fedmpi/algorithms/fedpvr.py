"""`fedpvr`: partial variance reduction, SCAFFOLD's control variates on the final layers only.

Li, Schmidt, Alstrøm, Stich, "On the Effectiveness of Partial Variance
Reduction in Federated Learning with Heterogeneous Data", CVPR 2023. Under
non-iid data the feature layers learn well with FedAvg and the clients
differ most in the classifier; FedPVR therefore keeps SCAFFOLD's control
variates (fedmpi.algorithms.scaffold, option II) on a chosen set V of final
tensors and takes plain local SGD on every other tensor. Each client uploads
its model and the V part of delta_c only, so with a small head the upload
is close to FedAvg's (the paper: about 1.05x FedAvg for VGG-11, SCAFFOLD 2x).

`layers` chooses V. Its entries are tensor names of the model's flat layout
(`fc3.weight`) or one of two words:

    layers: [head]                 # default: the model's classifier head (its final_layers)
    layers: [all]                  # every tensor: SCAFFOLD, step for step
    layers: []                     # no tensor: FedAvg, step for step
    layers: [head, fc2.weight]     # the union of what the entries name

A tensor name is a dotted path (`fc3.bias`) and never one of the words
unless a model has a top-level tensor called `head` or `all`; then the word
is ambiguous and building the algorithm is an error. Unknown names are an
error that lists the model's tensors.

Contribution layout (num_params + 1 + |V|,) float32: `[w * theta | w |
delta_c over V]`, V's entries in the flat vector's order. LeNet-5 with V =
head (fc3, 84 * 10 + 10 = 850 entries): 62006 + 1 + 850 = 62857 entries,
1.014x FedAvg's 62007.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmpi.algorithms.base import ALGORITHMS, Setting
from fedmpi.algorithms.scaffold import ControlVariates, Ranges, merged_ranges
from fedmpi.errors import UsageError

HEAD = "head"  # the model's final_layers (fedmpi.models.base)
ALL = "all"  # every parameter tensor (floating buffers have no gradient)


@dataclass(frozen=True)
class FedPVRParams:
    layers: tuple[str, ...] = (HEAD,)  # tensors with control variates: names, `head`, `all`; [] = none (FedAvg)

    def check(self) -> None:
        for name in self.layers:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"layers must be a list of tensor names or the words {HEAD}, {ALL}; "
                                 f"got the entry {name!r}")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be a list without repeats, got {list(self.layers)!r}")


def variate_tensors(layers: tuple[str, ...], setting: Setting) -> tuple[str, ...]:
    """The names of the tensors in V, in the flat vector's order.

    Raises UsageError naming `algorithm.layers` when an entry names no tensor
    of the model or a word is ambiguous with a tensor's own name."""
    names = [s.name for s in setting.slots if s.trainable]  # buffers have no gradient to correct
    known = set(names)
    listing = ", ".join(names)
    for word, meaning in ((HEAD, "the classifier head"), (ALL, "every tensor")):
        if word in layers and word in known:
            raise UsageError(f"config: algorithm.layers: {word!r} is both a word ({meaning}) and a tensor "
                             f"of this model; list the tensors by name instead: {listing}")
    chosen: set[str] = set()
    for entry in layers:
        if entry == ALL:
            chosen.update(names)
        elif entry == HEAD:
            head = set(setting.final_layers)
            if not head or not head <= known:
                raise UsageError(f"config: algorithm.layers: the model's final layers {list(setting.final_layers)} "
                                 f"are not tensors of its layout; list the tensors by name: {listing}")
            chosen.update(head)
        elif entry in known:
            chosen.add(entry)
        else:
            raise UsageError(f"config: algorithm.layers: unknown tensor {entry!r}; the model's tensors are "
                             f"{listing} (or the words {HEAD}, {ALL}; [] for none)")
    return tuple(n for n in names if n in chosen)


@ALGORITHMS.register("fedpvr", FedPVRParams)
class FedPVR(ControlVariates):
    """Control variates on the tensors `params.layers` names, plain local SGD on the rest."""

    def __init__(self, params: FedPVRParams, setting: Setting):
        self.variate_names = variate_tensors(params.layers, setting)
        ranges: Ranges = merged_ranges(setting.slots, self.variate_names)
        super().__init__(params, setting, ranges)
