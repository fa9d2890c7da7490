"""Ship the top-level stubetc/ directory inside the package as rumpfs/stubetc."""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithStubetc(build_py):
    def run(self):
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        dest = os.path.join(self.build_lib, "rumpfs", "stubetc")
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        shutil.copytree(os.path.join(here, "stubetc"), dest)


setup(cmdclass={"build_py": BuildWithStubetc})
