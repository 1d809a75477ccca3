"""Build script: metadata lives in setup.cfg; this file only adds the optional native extension.

``darknet_prn._native`` holds C versions of the bit-exact pre-processing kernels (stb_image's IDCT, up-sampling
and colour conversion, Darknet's resize). It is optional: when no C compiler is available the build goes on
without it and the numpy versions (same bits, slower) are used.
"""
import sys

from setuptools import Extension, setup

args = [] if sys.platform == "win32" else ["-O3", "-fwrapv", "-ffp-contract=off", "-fno-fast-math"]

setup(ext_modules=[Extension("darknet_prn._native", ["darknet_prn/_native.c"], extra_compile_args=args,
                             optional=True)])
