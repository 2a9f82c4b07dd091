"""Moved to `heads.detection.matching`; this old path re-exports what callers import from it.

`SSDLiteLabelEncoder`, beside the paper head's matcher. Old code and saved files
name this module; new code imports the new one.
"""

from heads.detection.matching import SSDLiteLabelEncoder

__all__ = [
    "SSDLiteLabelEncoder",
]
