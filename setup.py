"""The metadata is in setup.cfg; this adds the optional C extensions.

Without a C compiler and Python's headers the build skips them: on x86 the
worker then writes its slot in pure Python (worker/slotwriter.py SlotWriter);
elsewhere it writes none, as Python's stores are unordered there
(worker/ordering.py).  Without the codec (common/_fastcgi.c) the worker
frames and parses FastCGI in Python (common/fastcgi.py), with the same results;
without the fast path (worker/_fastpath.c) every request takes the Python one;
without supervisord/_xmlfill.c, getPoolStatus's reply is written by
supervisord/xmlmarshal.py's Python alone, the same text.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension('supervisor_fcgi_ext.worker._slotwriter',
                             ['supervisor_fcgi_ext/worker/_slotwriter.c'],
                             optional=True),
                   Extension('supervisor_fcgi_ext.common._fastcgi',
                             ['supervisor_fcgi_ext/common/_fastcgi.c'],
                             depends=['supervisor_fcgi_ext/common/fcgi_record.h'],
                             optional=True),
                   Extension('supervisor_fcgi_ext.worker._fastpath',
                             ['supervisor_fcgi_ext/worker/%s.c' % name for name in (
                                 '_fastpath', 'fastpath_answer', 'fastpath_environ',
                                 'fastpath_send')],
                             depends=['supervisor_fcgi_ext/worker/fastpath.h',
                                      'supervisor_fcgi_ext/common/fcgi_record.h'],
                             optional=True),
                   Extension('supervisor_fcgi_ext.supervisord._xmlfill',
                             ['supervisor_fcgi_ext/supervisord/_xmlfill.c'], optional=True)],
      # the headers those C files include, for an sdist to build them too
      package_data={'supervisor_fcgi_ext.common': ['*.h'],
                    'supervisor_fcgi_ext.worker': ['*.h']})
