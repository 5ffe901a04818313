"""Stand-in: only the names internvl_utils.py binds at import; each raises if called."""
from standin_util import export

export(globals(), __name__, ["Compose", "Lambda", "Resize", "ToTensor", "Normalize"])
