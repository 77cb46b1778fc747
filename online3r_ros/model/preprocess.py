"""MASt3R image pre-processing, identical to the reference, plus the matching intrinsics change.

Reference recipe (dust3r ``load_images`` / MASt3R-SLAM ``resize_img``; notes: mast3r_architecture.md §3,
mast3r_slam_notes.md §2.3):

* ``size=512``: resize so the long side is 512 (each side ``int(round(side * 512 / max(W, H)))``), with PIL
  LANCZOS when shrinking and BICUBIC otherwise; then centre-crop each side down to a multiple of 16 around
  ``(W // 2, H // 2)``. A square result is cropped to a 4:3 landscape (height = 3/4 width) unless
  ``square_ok``. 640x480 -> 512x384, 1280x720 -> 512x288, 752x480 -> 512x320.
* ``size=224``: resize so the *short* side is 224, then centre-crop a 224x224 square.
* Normalise ``x = (u8 / 255 - 0.5) / 0.5`` in float32 (RGB order, ``[1, 3, H, W]``) and
  ``true_shape = [[H, W]]`` (int32).

Pixel convention: pixel ``(u, v)`` covers ``[u, u+1) x [v, v+1)``; its centre is at ``u + 0.5`` in the
continuous image plane (PIL's convention when resampling). Intrinsics ``K`` use the usual "integer
coordinates at pixel centres" convention (``u = fx * x / z + cx`` gives the pixel index whose centre the
ray hits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import PIL.Image
import torch

__all__ = [
    "PreparedImage",
    "ResizeTransform",
    "SUPPORTED_SIZES",
    "compute_transform",
    "preprocess_image",
    "scale_intrinsics",
    "to_pil_rgb",
]

SUPPORTED_SIZES = (224, 512)
PATCH = 16

ImageLike = Union[np.ndarray, PIL.Image.Image]


@dataclass(frozen=True)
class ResizeTransform:
    """Geometry of one pre-processing call (all sizes ``(width, height)`` in pixels).

    Attributes:
        orig_size: input image size ``(W1, H1)``.
        resized_size: size after the resize, before the crop ``(W, H)``.
        crop_box: integer crop box ``(left, top, right, bottom)`` in the resized image.
        size: the ``size`` argument (224 or 512).
    """

    orig_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    size: int

    @property
    def out_size(self) -> tuple[int, int]:
        """Network input size ``(Wc, Hc)``."""
        left, top, right, bottom = self.crop_box
        return right - left, bottom - top

    @property
    def out_shape(self) -> tuple[int, int]:
        """Network input shape ``(Hc, Wc)`` (the ``true_shape`` order)."""
        w, h = self.out_size
        return h, w

    @property
    def scale(self) -> tuple[float, float]:
        """``(scale_w, scale_h)`` = original / resized, the reference's ``scale_w, scale_h``."""
        return self.orig_size[0] / self.resized_size[0], self.orig_size[1] / self.resized_size[1]

    @property
    def crop_offset(self) -> tuple[int, int]:
        """``(left, top)``: first kept pixel of the resized image."""
        return self.crop_box[0], self.crop_box[1]

    @property
    def reference_half_crop(self) -> tuple[float, float]:
        """MASt3R-SLAM's ``(half_crop_w, half_crop_h) = ((W - Wc) / 2, (H - Hc) / 2)``.

        Equals :attr:`crop_offset` when the resized side is even; 0.5 px more when it is odd.
        """
        w, h = self.resized_size
        wc, hc = self.out_size
        return (w - wc) / 2, (h - hc) / 2


@dataclass
class PreparedImage:
    """One image ready for the network.

    Attributes:
        img: ``[1, 3, Hc, Wc]`` float32 in [-1, 1] (RGB).
        true_shape: ``[1, 2]`` int32 ``[[Hc, Wc]]``.
        uimg: ``[Hc, Wc, 3]`` float32 in [0, 1], the cropped, un-normalised RGB image (for colours).
        transform: the resize/crop geometry (map intrinsics with :func:`scale_intrinsics`).
    """

    img: torch.Tensor
    true_shape: torch.Tensor
    uimg: torch.Tensor
    transform: ResizeTransform


def _resized_size(w: int, h: int, long_edge: int) -> tuple[int, int]:
    s = max(w, h)
    return int(round(w * long_edge / s)), int(round(h * long_edge / s))


def compute_transform(width: int, height: int, size: int = 512, square_ok: bool = False) -> ResizeTransform:
    """Resize/crop geometry of the reference recipe for an input of ``width x height`` (no pixels touched).

    Raises:
        ValueError: ``size`` not in (224, 512), or a non-positive / too small input.
    """
    if size not in SUPPORTED_SIZES:
        raise ValueError(f"size must be one of {SUPPORTED_SIZES} (as the reference), got {size!r}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    w1, h1 = int(width), int(height)
    if size == 224:
        long_edge = round(size * max(w1 / h1, h1 / w1))
    else:
        long_edge = size
    w, h = _resized_size(w1, h1, long_edge)
    cx, cy = w // 2, h // 2
    if size == 224:
        half = min(cx, cy)
        box = (cx - half, cy - half, cx + half, cy + half)
    else:
        halfw, halfh = ((2 * cx) // PATCH) * (PATCH // 2), ((2 * cy) // PATCH) * (PATCH // 2)
        if not square_ok and w == h:
            # 3 * halfw / 4 is an integer: halfw is a multiple of 8.
            halfh = (3 * halfw) // 4
        box = (cx - halfw, cy - halfh, cx + halfw, cy + halfh)
    if box[2] - box[0] < PATCH or box[3] - box[1] < PATCH:
        raise ValueError(
            f"image {w1}x{h1} is too elongated: after resizing to {w}x{h} the crop {box} is smaller "
            f"than one {PATCH}x{PATCH} patch"
        )
    return ResizeTransform(orig_size=(w1, h1), resized_size=(w, h), crop_box=box, size=size)


def to_pil_rgb(image: ImageLike) -> PIL.Image.Image:
    """Convert the accepted inputs to an RGB PIL image.

    Accepted: PIL images (converted with ``.convert('RGB')``), numpy ``uint8`` ``[H, W, 3]`` RGB,
    ``[H, W]`` or ``[H, W, 1]`` grey (replicated to RGB), and float ``[H, W, 3]`` in [0, 1], which is
    converted as MASt3R-SLAM does (``np.uint8(img * 255)``, truncation).

    Raises:
        TypeError: unsupported type or dtype.
        ValueError: unsupported shape or float values outside [0, 1].
    """
    if isinstance(image, PIL.Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array or a PIL image, got {type(image).__name__}")
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB (or HxW grey), got shape {tuple(image.shape)}")
    if arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError("float image values must be finite and in [0, 1]")
        arr = np.uint8(arr * 255)  # same truncation as MASt3R-SLAM's resize_img
    else:
        raise TypeError(f"image dtype must be uint8 or float in [0, 1], got {arr.dtype}")
    return PIL.Image.fromarray(np.ascontiguousarray(arr))


def _resize_pil(img: PIL.Image.Image, new_size: tuple[int, int]) -> PIL.Image.Image:
    # Reference rule: LANCZOS when the long side shrinks, BICUBIC otherwise (equal size included).
    interp = PIL.Image.LANCZOS if max(img.size) > max(new_size) else PIL.Image.BICUBIC
    return img.resize(new_size, interp)


def preprocess_image(image: ImageLike, size: int = 512, square_ok: bool = False) -> PreparedImage:
    """Resize, crop and normalise one image exactly like the reference.

    Args:
        image: see :func:`to_pil_rgb` for the accepted forms (``HxWx3`` uint8 RGB is the normal case).
        size: 512 (long side 512, crop to multiples of 16) or 224 (short side 224, square crop).
        square_ok: keep square 512 results square (otherwise they are cropped to 4:3 as the reference).

    Returns:
        A :class:`PreparedImage` (CPU tensors; the engine moves them to its device).
    """
    pil = to_pil_rgb(image)
    tf = compute_transform(pil.size[0], pil.size[1], size=size, square_ok=square_ok)
    pil = _resize_pil(pil, tf.resized_size).crop(tf.crop_box)
    u8 = torch.from_numpy(np.asarray(pil).copy())  # [H, W, 3] uint8
    uimg = u8.to(torch.float32).div_(255.0)  # same op order as torchvision ToTensor
    img = ((uimg.permute(2, 0, 1) - 0.5) / 0.5).unsqueeze(0).contiguous()  # Normalize(0.5, 0.5)
    h, w = tf.out_shape
    true_shape = torch.tensor([[h, w]], dtype=torch.int32)
    return PreparedImage(img=img, true_shape=true_shape, uimg=uimg, transform=tf)


def scale_intrinsics(
    K: np.ndarray | torch.Tensor,
    transform: ResizeTransform,
    convention: Literal["pixel_center", "reference"] = "pixel_center",
) -> np.ndarray | torch.Tensor:
    """Camera matrix of the network image given the original image's ``K`` (calibrated mode).

    ``s_w, s_h = transform.scale`` (original / resized), ``(l, t) = transform.crop_offset``:

    * ``"pixel_center"`` (default, geometrically exact for PIL resampling, where output pixel centre
      ``u' + 0.5`` samples input position ``(u' + 0.5) * s_w``):
      ``fx' = fx / s_w``, ``cx' = (cx + 0.5) / s_w - 0.5 - l`` (same for y with ``s_h``, ``t``).
    * ``"reference"`` (MASt3R-SLAM ``Intrinsics.K_frame`` bit for bit): ``fx' = fx / s_w``,
      ``cx' = cx / s_w - (W - Wc) / 2``. It ignores the half-pixel shift of the resize
      (``0.5 * (1/s_w - 1)`` px, e.g. -0.1 px for 640 -> 512) and, for an odd resized side, places the crop
      0.5 px off (e.g. 752x480: the crop starts at row 3, the reference subtracts 3.5).

    The skew term ``K[0, 1]`` is divided by ``s_w`` (it contributes to u). Works on ``[..., 3, 3]`` numpy
    arrays or tensors and returns the same type (float copy).
    """
    if convention not in ("pixel_center", "reference"):
        raise ValueError(f"convention must be 'pixel_center' or 'reference', got {convention!r}")
    if tuple(K.shape[-2:]) != (3, 3):
        raise ValueError(f"K must have shape [..., 3, 3], got {tuple(K.shape)}")
    sw, sh = transform.scale
    if convention == "pixel_center":
        left, top = transform.crop_offset
        ox, oy = (0.5 / sw - 0.5 - left), (0.5 / sh - 0.5 - top)
    else:
        hx, hy = transform.reference_half_crop
        ox, oy = -hx, -hy
    if isinstance(K, torch.Tensor):
        out = K.clone() if K.is_floating_point() else K.to(torch.float64)
    else:
        out = np.array(K, dtype=np.float64 if not np.issubdtype(K.dtype, np.floating) else K.dtype)
    out[..., 0, 0] = K[..., 0, 0] / sw
    out[..., 0, 1] = K[..., 0, 1] / sw
    out[..., 1, 1] = K[..., 1, 1] / sh
    out[..., 0, 2] = K[..., 0, 2] / sw + ox
    out[..., 1, 2] = K[..., 1, 2] / sh + oy
    return out
