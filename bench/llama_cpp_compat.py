"""What every llama.cpp baseline script needs before it loads a model.

llama-cpp-python 0.3.36 builds llama.cpp for the host CPU. On a CPU with AMX (the
development box's Intel Xeon since 2026-12-06) its "extra buffer types" (weight repacking
and the AMX kernels) make the first decode crash with a segmentation fault. They are turned off there, so every baseline runs ggml's plain CPU
kernels, the ones its numerics and our engine's are compared on. Set
PONDER_LLAMA_EXTRA_BUFTS=1 to keep them on anyway.
"""

import os

import llama_cpp


def host_has_amx():
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_tile" in line for line in f)
    except OSError:
        return False


def extra_buffers_enabled():
    if os.environ.get("PONDER_LLAMA_EXTRA_BUFTS") == "1":
        return True
    return not host_has_amx()


def model_params():
    """llama.cpp's default model parameters, with the extra buffer types off where they crash."""
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = extra_buffers_enabled()
    return params


def use_safe_model_params():
    """Makes the high-level `llama_cpp.Llama` build its model parameters with `model_params`."""
    import llama_cpp.llama as high_level

    high_level.llama_cpp.llama_model_default_params = model_params
