"""The metadata is in setup.cfg; this adds the optional C scoreboard writer.

Without a C compiler and Python's headers the build skips it and the
package runs on the pure-Python writer (worker/slotwriter.py SlotWriter).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension('supervisor_fcgi_ext.worker._slotwriter',
                             ['supervisor_fcgi_ext/worker/_slotwriter.c'],
                             optional=True)])
