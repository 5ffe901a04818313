"""GPU-tier stand-in for flashinfer, which the GPU machine's image lacks.

On CUDA, SGLang 0.5.9 imports flashinfer modules at module level on paths the NSA backend's
import reaches (`sglang.jit_kernel.rope`, only to find its headers; quantization schemes'
`flashinfer.fp4_quantization`). The replay-metadata paths and RadixCache never call flashinfer,
so any name and any submodule is a stand-in that raises when called: a call means the harness
left those paths.
"""
import importlib
import logging

from standin_util import any_name_package

any_name_package(__name__)
# SGLang's configure_logger (0.5.12 on) sets the level of flashinfer's JIT logger whenever
# flashinfer imports: a real logger there
importlib.import_module(f"{__name__}.jit.core").logger = logging.getLogger("flashinfer.jit")
