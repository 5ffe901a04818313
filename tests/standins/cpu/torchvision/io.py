"""`torchvision.io.decode_jpeg`: SGLang 0.5.10 on imports it at module level (srt/utils/common.py);
nothing on the tested paths calls it."""
from standin_util import export

export(globals(), __name__, ["decode_jpeg"])
