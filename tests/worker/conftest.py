"""The worker tests' fixtures: a pool of real fcgi-worker processes, and a
directory with an app module (workerpool.py has the rest)."""
from __future__ import annotations

import pytest

from workerpool import APP, CODEC_ENV, Pool


@pytest.fixture
def codec():
    """The worker's FastCGI codec: its default (test modules override this
    with workerpool.CODECS to run through both)."""
    return 'default'


@pytest.fixture
def pool(tmp_path, codec):
    pools = []

    def make(kind='unix'):
        pools.append(Pool(tmp_path / str(len(pools)), kind, CODEC_ENV[codec]))
        return pools[-1]
    yield make
    for p in pools:
        p.stop()


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / 'myapp.py').write_text(APP)
    return str(tmp_path)
