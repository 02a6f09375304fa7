"""recsys: adversarial multimodal CTR prediction (MARN)."""

__version__ = "0.1.0"
