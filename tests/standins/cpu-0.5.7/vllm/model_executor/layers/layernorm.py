"""The two names SGLang 0.5.7's layers/layernorm.py imports; constructing either raises."""
from standin_util import raising


class RMSNorm:
    __init__ = raising("vllm.model_executor.layers.layernorm.RMSNorm")


class GemmaRMSNorm:
    __init__ = raising("vllm.model_executor.layers.layernorm.GemmaRMSNorm")
