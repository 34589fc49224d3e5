"""The local backend: GGUF models through llama.cpp's C API. Knows nothing of BPO.

    with Engine("model.gguf") as engine:
        prompt = tuple(engine.tokenize("Hello", add_bos=True))
        for event in (gen := engine.generate(Request(prompt, max_new_tokens=32, n=2))):
            print(event.index, event.text)
        print(gen.result.timings)

    for event in engine.generate_many(requests, max_sequences=8):   # several requests decoded together
        ...  # (request index, TokenEvent) per token, RequestDone(index, result) per finished request

``Request``, ``Sampling`` and the results are the neutral contract of ``bpo_local.backend``.
"""

from .generation import BatchGeneration, Generation
from .model import Engine
from .system import SystemInfo, physical_cores, system_info

__all__ = ["BatchGeneration", "Engine", "Generation", "SystemInfo", "physical_cores", "system_info"]
