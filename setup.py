"""The metadata is in setup.cfg; this adds the optional C scoreboard writer.

Without a C compiler and Python's headers the build skips it: on x86 the
worker then writes its slot in pure Python (worker/slotwriter.py SlotWriter);
elsewhere it writes none, as Python's stores are unordered there
(worker/ordering.py).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension('supervisor_fcgi_ext.worker._slotwriter',
                             ['supervisor_fcgi_ext/worker/_slotwriter.c'],
                             optional=True)])
