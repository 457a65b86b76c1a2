"""Benchmark of the jit'd detection ops next to torchvision's C++ kernels, in one process.

Run: python experiments/benchmarks/ops.py  (needs the `ref` extra: torch + torchvision)
Results are recorded in experiments/benchmarks/README.md.
"""

# --- section: IoU and NMS ---

# --- section: RoIAlign and RoIPool ---
