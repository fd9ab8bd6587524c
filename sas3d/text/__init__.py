"""Text encoders (one interface: list of strings -> L2-normalised matrix), prompts and label sets."""

from sas3d.text.base import TextEncoder

__all__ = ["TextEncoder"]
