"""Image side of the joint model: pixels -> patch grid -> hidden-size tokens."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["PIXEL_MEAN", "PIXEL_STD", "build_patch_embedder", "images_to_array", "images_to_tensor"]

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
