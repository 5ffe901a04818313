"""CPU-tier stand-in for vllm, for SGLang 0.5.7 only (tests/harness/releases.py).

On a machine without CUDA, 0.5.7 falls back at module level to vllm's `RMSNorm`, `GemmaRMSNorm`
(`layers/layernorm.py`) and `SiluAndMul`, `GeluAndMul` (`layers/activation.py`), which the NSA
backend's and the runners' import chains reach; nothing on the tested paths uses them (each
raises when constructed). vllm itself is a CUDA build of several GB; a GPU server of 0.5.7 takes
sgl_kernel's kernels there and never imports it.
"""
