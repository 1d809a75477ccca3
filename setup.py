"""Build script: metadata lives in setup.cfg; this file only adds the optional native extension.

``darknet_prn._native`` holds C versions of the bit-exact pre-processing kernels (JPEG Huffman decoding, stb_image's
IDCT, up-sampling and colour conversion, Darknet's resize). It is optional: when no C compiler is available the
build goes on without it and libjpeg + numpy (same bits, slower) are used. OpenMP is used when the compiler has it.
"""
import os
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup


def _openmp_flag() -> list:
    """``["-fopenmp"]`` when the C compiler builds and links an OpenMP program, else ``[]``."""
    if sys.platform == "win32":
        return []
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            ok = subprocess.run(cc + ["-fopenmp", src, "-o", os.path.join(d, "t")], capture_output=True).returncode
        except OSError:
            return []
    return ["-fopenmp"] if ok == 0 else []


omp = _openmp_flag()
args = [] if sys.platform == "win32" else ["-O3", "-fwrapv", "-ffp-contract=off", "-fno-fast-math"] + omp

setup(ext_modules=[Extension("darknet_prn._native", ["darknet_prn/_native.c"], extra_compile_args=args,
                             extra_link_args=omp, optional=True)])
