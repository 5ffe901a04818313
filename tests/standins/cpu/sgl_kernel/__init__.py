"""CPU-tier stand-in for sgl_kernel (its library needs libcuda.so.1 and a CUDA torch).

Only the names SGLang 0.5.8 binds at module level on the import paths of `nsa_backend` and
`radix_cache` are defined, and each raises if called. Any other name raises ImportError, so
SGLang's own `try: from sgl_kernel import X / except ImportError` fallbacks still apply.
"""
from standin_util import export

export(globals(), __name__, ["silu_and_mul"])
