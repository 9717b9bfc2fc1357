"""The model zoo: the architectures the adversarial-learning papers evaluate, built by name.

Every builder takes the input shape (without the batch dimension) and the
number of classes, so one config line builds any model for any data set::

    model = build_model("small_cnn", in_shape=(1, 28, 28), num_classes=10)

Input normalization lives inside the model (:class:`Normalize`, prepended when
a builder gets ``mean``/``std``), so a model maps inputs in the box a person
sees, e.g. ``[0, 1]``, to logits and ε is measured in that pixel space, one
number for every channel.

Models are plain :class:`torch.nn.Module` s; :func:`build_model` validates the
options against the builder's signature, and :mod:`advlearn.checkpoint` stores
the name and options next to the weights to rebuild the model later.

The package: :mod:`~advlearn.models.layers` (:class:`Normalize`, :class:`Maxout`, shared checks),
:mod:`~advlearn.models.small` (logistic regression, MLP, maxout, the MNIST CNN),
:mod:`~advlearn.models.resnet` (PreAct ResNet-18, wide ResNets) and
:mod:`~advlearn.models.registry` (:data:`MODELS`, :func:`build_model`).
"""

from advlearn.models.layers import Maxout, Normalize
from advlearn.models.registry import MODELS, build_model, count_parameters, register_model
from advlearn.models.resnet import (
    PreActBlock,
    PreActResNet,
    WideBasicBlock,
    WideResNet,
    preact_resnet18,
    wide_resnet,
)
from advlearn.models.small import logreg, maxout, mlp, small_cnn

__all__ = [
    "MODELS",
    "Maxout",
    "Normalize",
    "PreActBlock",
    "PreActResNet",
    "WideBasicBlock",
    "WideResNet",
    "build_model",
    "count_parameters",
    "logreg",
    "maxout",
    "mlp",
    "preact_resnet18",
    "register_model",
    "small_cnn",
    "wide_resnet",
]
