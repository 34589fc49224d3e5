"""The inference engine: GGUF models through llama.cpp's C API. Knows nothing of BPO.

    with Engine("model.gguf") as engine:
        prompt = tuple(engine.tokenize("Hello", add_bos=True))
        for event in (gen := engine.generate(Request(prompt, max_new_tokens=32, n=2))):
            print(event.index, event.text)
        print(gen.result.timings)

    for event in engine.generate_many(requests, max_sequences=8):   # several requests decoded together
        ...  # (request index, TokenEvent) per token, RequestDone(index, result) per finished request
"""

from .generation import BatchGeneration, Generation
from .model import Engine
from .system import SystemInfo, physical_cores, system_info
from .types import (
    Completion,
    FinishReason,
    GenerationResult,
    ModelInfo,
    Request,
    RequestDone,
    Sampling,
    Timings,
    TokenEvent,
)

__all__ = [
    "BatchGeneration", "Completion", "Engine", "FinishReason", "Generation", "GenerationResult", "ModelInfo", "Request",
    "RequestDone", "Sampling", "SystemInfo", "Timings", "TokenEvent", "physical_cores", "system_info",
]
