"""Packaging beyond pyproject.toml: the optional compiled build of the hot modules.

``EXTRACTOR_MYPYC=1 python setup.py build_ext --inplace`` (``make native``)
compiles the modules every entry passes through with mypyc, next to their
sources; Python imports the compiled ones first. Without it, or where no C
compiler is at hand, extractor is the same code, interpreted.
"""

import os
import runpy

from setuptools import setup

ext_modules = []
if os.environ.get("EXTRACTOR_MYPYC") == "1":
    from mypyc.build import mypycify

    # The list lives in the package, which checks at import that the build is current.
    native = runpy.run_path("extractor/native.py")["NATIVE"]
    ext_modules = mypycify(
        [f"extractor/{name}.py" for name in native],
        opt_level="3",
        group_name="extractor._native",  # the shared runtime goes inside the package
        target_dir="build/native",
    )

setup(ext_modules=ext_modules)
