"""The XLA flags every test process runs with (no jax import here: read before jax starts)."""

# XLA:CPU's own code generation at LLVM -O0: the suite's programs are tiny and compile far
# longer than they run, and -O0 compiles them ~40 % faster. Matmuls and convolutions still go
# through the prebuilt Eigen / XNNPACK kernels, and float semantics are the same (no fast-math
# at any level). Benchmarks and real runs keep XLA's defaults.
TEST_OPTIMIZATION_FLAGS = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
    """``XLA_FLAGS`` for a test process with ``devices`` simulated CPU devices."""
    return f"--xla_force_host_platform_device_count={devices} {TEST_OPTIMIZATION_FLAGS}"
