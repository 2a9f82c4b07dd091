"""Moved to `heads.detection.layers`; this old path re-exports what callers import from it.

SSDLite's extra block and predictor, one set for both heads. Old code and saved
files name this module; new code imports the new one.
"""

from heads.detection.layers import SSDLiteExtraBlock, SSDLitePredictor

__all__ = [
    "SSDLiteExtraBlock",
    "SSDLitePredictor",
]
