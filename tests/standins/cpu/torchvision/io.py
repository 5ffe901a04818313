"""Stand-in: `torchvision.io` as imported at module level by SGLang 0.5.10+ (`srt/utils/common.py`:
`decode_jpeg`) and by transformers 5 (`image_utils.py`: `ImageReadMode`, `decode_image`), which
takes this package for torchvision. Each callable raises if called."""
import enum

from standin_util import export

export(globals(), __name__, ["decode_jpeg", "decode_image"])


class ImageReadMode(enum.Enum):
    UNCHANGED = 0
    GRAY = 1
    GRAY_ALPHA = 2
    RGB = 3
    RGB_ALPHA = 4
