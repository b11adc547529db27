"""A production install needs nothing the lab alone needs: install_requires
is supervisor, flup and prometheus_client, and every module of the package
imports with nothing else but the standard library (psutil, matplotlib and
pytest are blocked in a fresh interpreter)."""
import configparser
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNTIME = ('supervisor', 'flup', 'prometheus_client')

IMPORT_ALL = r'''
import importlib, importlib.abc, pkgutil, sys
allowed = set(sys.stdlib_module_names) | set(%r) | {'supervisor_fcgi_ext'}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] not in allowed:
            raise ImportError('not a runtime dependency: ' + name)
        return None

sys.meta_path.insert(0, Refuse())
import supervisor_fcgi_ext
failed = []
for info in pkgutil.walk_packages(supervisor_fcgi_ext.__path__, 'supervisor_fcgi_ext.'):
    if info.name.endswith('.__main__'):
        continue   # runs the program when imported
    try:
        importlib.import_module(info.name)
    except ImportError as e:
        failed.append('%%s: %%s' %% (info.name, e))
print('\n'.join(failed))
''' % (RUNTIME,)


def test_install_requires_is_the_runtime_only():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, 'setup.cfg'))
    lines = parser['options']['install_requires'].strip().splitlines()
    assert sorted(re.split(r'[ <>=!~;\[]', l.strip())[0] for l in lines) == sorted(RUNTIME)


def test_every_module_imports_with_the_runtime_dependencies_only():
    result = subprocess.run([sys.executable, '-c', IMPORT_ALL], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ''
