"""Model zoo: CIFAR-sized ResNet-20/56/110, VGG-16-BN, MobileNetV2, advertorch's LeNet5, and
torchvision's resnet18/resnet50/mobilenet_v2/mobilenet_v3_small when torchvision is installed.
"""

from . import lenet as lenet  # noqa: F401  (registers)
from . import mobilenetv2 as mobilenetv2  # noqa: F401
from . import resnet_cifar as resnet_cifar  # noqa: F401
from . import vgg as vgg  # noqa: F401
from .registry import ModelSpec as ModelSpec
from .registry import get_model as get_model
from .registry import list_models as list_models
from .registry import model_spec as model_spec
from .registry import register_model as register_model

__all__ = ["ModelSpec", "get_model", "list_models", "model_spec", "register_model"]
