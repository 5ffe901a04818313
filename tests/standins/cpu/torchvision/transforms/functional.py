"""Stand-in: `InterpolationMode`, imported at module level by internvl_utils.py."""
import enum


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
