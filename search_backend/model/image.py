"""Image side of the joint model: pixels -> patch grid -> hidden-size tokens."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "IMAGE_ENCODERS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "build_image_encoder",
    "build_patch_embedder",
    "images_to_array",
    "images_to_tensor",
]

IMAGE_ENCODERS = ("patches", "efficientnet-lite0")
"""``patches``: a conv stem learnt from scratch; ``efficientnet-lite0``: the ImageNet-pretrained CNN
of :mod:`search_backend.model.efficientnet`, cut where its feature grid has one cell per patch."""

PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


def images_to_array(images: list[Image.Image], image_size: int) -> np.ndarray:
    """(N, S, S, 3) uint8: each image converted to RGB and resized to ``image_size`` squared."""
    from PIL import Image as PILImage

    out = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), PILImage.Resampling.BICUBIC)
        out[i] = np.asarray(rgb, dtype=np.uint8)
    return out


def images_to_tensor(images: list[Image.Image] | np.ndarray, image_size: int) -> torch.Tensor:
    """(N, 3, S, S) float32 normalised pixels from PIL images or a uint8 (N, S, S, 3) array."""
    import torch

    arr = images if isinstance(images, np.ndarray) else images_to_array(images, image_size)
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return (t / 255.0 - PIXEL_MEAN) / PIXEL_STD


def build_patch_embedder(patch_size: int, hidden_size: int) -> torch.nn.Module:
    """A conv stem that maps each ``patch_size``-square patch to one ``hidden_size`` vector.

    log2(patch_size) stride-2 3x3 convolutions (channels 32, 64, 128, ... then hidden): unlike a
    single linear patchify it sees across patch borders, which matters for small synthetic objects.
    """
    from torch import nn

    steps = round(math.log2(patch_size))
    if patch_size < 2 or 2**steps != patch_size:
        raise ValueError(f"patch_size must be a power of two >= 2, got {patch_size}")
    layers: list[nn.Module] = []
    c_in = 3
    for i in range(steps):
        c_out = hidden_size if i == steps - 1 else min(32 * 2**i, hidden_size)
        layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1))
        if i < steps - 1:
            layers.append(nn.GELU())
        c_in = c_out
    return nn.Sequential(*layers)


def build_image_encoder(
    encoder: str,
    *,
    image_size: int,
    patch_size: int,
    hidden_size: int,
    resolution: int = 0,
    pretrained: bool = True,
) -> torch.nn.Module:
    """Normalised pixels (B, 3, S, S) -> (B, hidden_size, g, g), S = image_size, g = S / patch_size.

    ``patches`` uses :func:`build_patch_embedder`. ``efficientnet-lite0`` resizes the image to
    ``resolution`` (0: ``image_size``) and takes the CNN's features at stride ``resolution / g``
    (8, 16 or 32); ``pretrained`` loads the packaged ImageNet weights (False when a saved model
    restores its own).
    """
    from search_backend.config import check_choice

    check_choice("image encoder", encoder, IMAGE_ENCODERS)
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    if encoder == "patches":
        return build_patch_embedder(patch_size, hidden_size)
    from search_backend.model.efficientnet import LITE0_STAGES, build_efficientnet_lite0

    grid = image_size // patch_size
    side = resolution or image_size
    if side % grid or side // grid not in LITE0_STAGES:
        raise ValueError(
            f"efficientnet-lite0 needs encoder_resolution / grid in 8, 16, 32; got {side} / {grid} "
            f"(grid = image_size {image_size} / patch_size {patch_size})"
        )
    return build_efficientnet_lite0(side // grid, side, hidden_size, pretrained=pretrained)
