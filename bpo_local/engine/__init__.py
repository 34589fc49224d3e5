"""The inference engine: GGUF models through llama.cpp's C API. Knows nothing of BPO.

    with Engine("model.gguf") as engine:
        prompt = tuple(engine.tokenize("Hello", add_bos=True))
        for event in (gen := engine.generate(Request(prompt, max_new_tokens=32, n=2))):
            print(event.index, event.text)
        print(gen.result.timings)
"""

from .generation import Generation
from .model import Engine
from .system import SystemInfo, physical_cores, system_info
from .types import Completion, FinishReason, GenerationResult, ModelInfo, Request, Sampling, Timings, TokenEvent

__all__ = [
    "Completion", "Engine", "FinishReason", "Generation", "GenerationResult", "ModelInfo", "Request",
    "Sampling", "SystemInfo", "Timings", "TokenEvent", "physical_cores", "system_info",
]
