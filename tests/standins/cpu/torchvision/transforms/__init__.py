"""Stand-in: only the names internvl_utils.py binds at import (each raises if called), and
`InterpolationMode` (transformers 5's image_utils.py)."""
from standin_util import export

from .functional import InterpolationMode  # noqa: F401

export(globals(), __name__, ["Compose", "Lambda", "Resize", "ToTensor", "Normalize"])
