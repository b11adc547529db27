"""The [rpcinterface:fcgi] keys: defaults, and the one line a bad value gets."""
import pytest

from supervisor_fcgi_ext.supervisord.settings import AUTO, parse_settings


def test_defaults():
    settings = parse_settings({})
    assert (settings['sample_interval'], settings['scoreboard_dir'],
            settings['hold_sockets']) == (0.5, AUTO, True)


def test_unknown_key_is_refused_with_its_name():
    with pytest.raises(ValueError, match=r"unknown key 'sample_intervall' \(known: "):
        parse_settings({'sample_intervall': '1'})


@pytest.mark.parametrize('value', ['fast', '0', '61', ''])
def test_bad_interval(value):
    with pytest.raises(ValueError) as info:
        parse_settings({'sample_interval': value})
    assert str(info.value) == ("[rpcinterface:fcgi] sample_interval = %r is refused "
                               "(allowed: seconds between 0.1 and 60)" % value)


@pytest.mark.parametrize('value, expected', [
    ('none', None), (' NONE ', None), ('auto', AUTO), ('Auto', AUTO),
    ('/run/fcgi/', '/run/fcgi'), ('//run//fcgi', '/run/fcgi'), ('/run/fcgi', '/run/fcgi'),
])
def test_scoreboard_dir_forms(value, expected):
    assert parse_settings({'scoreboard_dir': value})['scoreboard_dir'] == expected


@pytest.mark.parametrize('value', ['/', '//', '///', 'relative/dir', 'run', '',
                                   '/run/../etc', '/run/./fcgi', '~/board'])
def test_scoreboard_dir_refuses_the_root_and_relative_paths(value):
    with pytest.raises(ValueError) as info:
        parse_settings({'scoreboard_dir': value})
    line = str(info.value)
    assert line.startswith("[rpcinterface:fcgi] scoreboard_dir = %r is refused (allowed: "
                           "auto, none, or an absolute path (not /" % value)
    assert '\n' not in line


def test_bad_hold_sockets():
    with pytest.raises(ValueError, match=r"hold_sockets = 'maybe' is refused "
                                         r"\(allowed: true or false\)"):
        parse_settings({'hold_sockets': 'maybe'})
