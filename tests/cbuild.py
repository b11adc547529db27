"""Where the optional C extensions must be built: their tests must not skip there."""
import os
import shutil
import sysconfig

import pytest


def require_c_build():
    """Skip unless a C compiler and Python's headers are here: where they
    are, the install builds the optional C extensions."""
    include = sysconfig.get_paths()['include']
    if not shutil.which(sysconfig.get_config_var('CC').split()[0]) \
            or not os.path.exists(os.path.join(include, 'Python.h')):
        pytest.skip('no C compiler or no Python.h: the pure-Python path is used')
