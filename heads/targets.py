"""Moved to `heads.detection.targets`; this old path re-exports what callers import from it.

The checks of detection targets. Old code and saved files name this module; new
code imports the new one.
"""

from heads.detection.targets import (
    CLIP_TOLERANCE,
    PROBLEMS,
    BoxFormatWarning,
    box_problem_message,
    box_problems,
    clean_detection_targets,
    format_hint,
)

__all__ = [
    "BoxFormatWarning",
    "CLIP_TOLERANCE",
    "PROBLEMS",
    "box_problem_message",
    "box_problems",
    "clean_detection_targets",
    "format_hint",
]
