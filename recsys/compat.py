"""Make the registry's torchvision 0.28.0 importable next to the CPU build of torch 2.13.0.

The only torchvision wheel that pairs with torch 2.13 is a CUDA build whose compiled
operators do not load on a CPU-only torch; importing it (and therefore `transformers`, which
imports torchvision when installed) fails with ``operator torchvision::nms does not exist``.
Declaring the two operator schemas that torchvision's Python code registers fake kernels for
is enough for the models and transforms we use; the C++ ops (nms, roi_align, io.decode_*) stay
unavailable, so images are decoded with PIL.

Call :func:`ensure_torchvision_importable` before importing torchvision or transformers.
``python -m recsys.compat`` checks the installed environment.
"""

from __future__ import annotations

import torch

# Kept referenced at module level: a Library removes its definitions when garbage-collected.
_TORCHVISION_FRAGMENT: torch.library.Library | None = None

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _has_op(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def ensure_torchvision_importable() -> None:
    """Define the missing torchvision operator schemas once (no-op when they exist)."""
    global _TORCHVISION_FRAGMENT
    if _TORCHVISION_FRAGMENT is not None:
        return
    missing = [name for name in _SCHEMAS if not _has_op(name)]
    if not missing:
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        lib.define(_SCHEMAS[name])
    _TORCHVISION_FRAGMENT = lib


def _self_check() -> None:
    ensure_torchvision_importable()
    import torchvision
    import transformers

    torchvision.models.mobilenet_v2(weights=None)
    print(
        f"ok: torch {torch.__version__}, torchvision {torchvision.__version__}, transformers {transformers.__version__}"
    )


if __name__ == "__main__":
    _self_check()
