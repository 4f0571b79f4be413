"""vLLM general plugin: teaches every vLLM process our checkpoint's config and model class.

Registered via the `vllm.general_plugins` entry point; vLLM calls it in the front-end, engine-core and
worker processes, possibly more than once, so it must be idempotent and cheap (the model module is
imported lazily by the registry).
"""

from __future__ import annotations


def register() -> None:
    import multiprocessing

    from vllm import ModelRegistry

    from videoqa.model.config import ARCHITECTURE, register_config

    register_config()
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "videoqa.model.vllm_llava_video:LlavaVideoForCausalLM")

    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        # A vLLM child started with the spawn method (forked ones are covered by videoqa.proc's fork hook):
        # exit with the process that started it, even when that one is SIGKILLed.
        from videoqa.proc import watch_pid

        watch_pid(parent.pid)
