"""Developer tools of the lossforge repository (not part of the installed package).

``python -m tools.aot``: ahead-of-time compile of every Triton kernel for NVIDIA targets, without
a GPU (see its docstring).
"""
