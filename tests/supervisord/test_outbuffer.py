"""The send size of supervisor's HTTP channels: raised once, with one log
line, a bigger one left alone, never an exception into supervisord.  On a
real supervisord: tests/integration/test_http_replies.py."""
import pytest
from supervisor.http import deferring_http_channel
from supervisor.tests.base import DummyLogger

from supervisor_fcgi_ext.supervisord.outbuffer import OUT_BUFFER, raise_out_buffer
from supervisor_fcgi_ext.supervisord.rpcinterface import make_fcgi_rpcinterface
from test_rpcinterface import make_supervisord
from pluginstate import forget_plugins


def channel_class(size):
    return type('Channel', (), {'ac_out_buffer_size': size})


def test_supervisors_4096_is_raised_once_with_one_line():
    logger, channel = DummyLogger(), channel_class(4096)
    raise_out_buffer(logger, channel)
    raise_out_buffer(logger, channel)
    assert channel.ac_out_buffer_size == OUT_BUFFER == 262144
    assert logger.data == ['fcgi: supervisor HTTP replies offer up to 262144 bytes '
                           'a send (was 4096): big replies in fewer loop passes']


def test_a_bigger_size_set_by_someone_else_stays():
    logger, channel = DummyLogger(), channel_class(1 << 20)
    raise_out_buffer(logger, channel)
    assert channel.ac_out_buffer_size == 1 << 20 and logger.data == []


def test_a_class_it_cannot_read_is_one_error_line_not_an_exception():
    logger = DummyLogger()
    raise_out_buffer(logger, object())
    assert len(logger.data) == 1 and logger.data[0].startswith(
        'fcgi: cannot raise the HTTP send size: AttributeError(')


@pytest.fixture
def supervisors_size():
    was = deferring_http_channel.ac_out_buffer_size
    deferring_http_channel.ac_out_buffer_size = 4096
    yield
    deferring_http_channel.ac_out_buffer_size = was
    forget_plugins()


def test_the_plugin_raises_supervisors_channel_when_it_loads(supervisors_size):
    make_fcgi_rpcinterface(make_supervisord(), scoreboard_dir='none')
    assert deferring_http_channel.ac_out_buffer_size == OUT_BUFFER
