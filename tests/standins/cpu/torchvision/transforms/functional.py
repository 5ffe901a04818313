"""Stand-in: `InterpolationMode`, imported at module level by internvl_utils.py (and, with every
member, by transformers 5's image_utils.py), and `pil_to_tensor` (transformers 5; raises)."""
import enum

from standin_util import export

export(globals(), __name__, ["pil_to_tensor"])


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"
