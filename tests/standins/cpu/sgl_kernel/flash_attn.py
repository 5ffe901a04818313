"""Stand-in: names nsa_backend.py imports at module level; each raises if called."""
from standin_util import export

export(globals(), __name__, ["flash_attn_varlen_func", "flash_attn_with_kvcache"])
