"""Models: the contract (fedmpi.models.base) and one module per model.

A new model is one module that registers itself with `@MODELS.register(name,
Params)` plus its import here.
"""

from fedmpi.models.base import MODELS, FedModel, build_model
from fedmpi.models import lenet  # noqa: F401  (registers "lenet")
from fedmpi.models import cnn  # noqa: F401  (registers "cnn")
from fedmpi.models import resnet  # noqa: F401  (registers "resnet8", "resnet20", "resnet32", "resnet56")
from fedmpi.models.lenet import LeNet

__all__ = ["MODELS", "FedModel", "LeNet", "build_model"]
