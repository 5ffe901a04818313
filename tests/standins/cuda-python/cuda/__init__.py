"""Stand-in for NVIDIA's cuda-python (`cuda.bindings`), where it is not installed.

SGLang 0.5.15's CuTe DSL kernel module (reached by the DSA backend's import chain, see
standins/cutlass-dsl) imports `cuda.bindings.driver` at module level, for a kernel the
replay-metadata paths never run (it names `driver.CUstream` in a signature). Any name of any
submodule is an empty class that raises when instantiated: apache-tvm-ffi, which SGLang's JIT
kernels load through, imports `cuda.bindings.driver` when it can and tests arguments with
`isinstance(arg, driver.CUstream)` (harness/releases.py `standin_dirs` puts it on the path only
where `cuda.bindings` is missing).
"""
from standin_util import any_name_package

any_name_package(__name__, types_only=True)
