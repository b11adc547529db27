"""GET /fcgi/status (HTML) and /fcgi/status.json on supervisord's HTTP servers.

The page is complete as served, so it reads with scripting off; a small
inline script (statuspage_assets.SCRIPT) redraws it from the JSON every
REFRESH_MS and computes the rates from two readings.  Both draw the same
elements: a ``data-field`` attribute names the status field a cell shows.
Every text that a worker or a client controls goes through ``text()``.

``respond`` is the whole of it as a plain function (plugin, path, query,
headers -> code, content type, body): a page of supervisord/httpserve.py,
which serves it behind supervisor's own auth.
"""
import html
import json
import time
from urllib.parse import parse_qs, quote

from supervisor.states import SupervisorStates

from supervisor_fcgi_ext.common.scoreboard import BUSY_STATES
from supervisor_fcgi_ext.common.text import safe_text
from supervisor_fcgi_ext.supervisord.statuspage_assets import SCRIPT, STYLE

__all__ = ['respond', 'pool_statuses', 'safe_strings', 'render_page', 'render_pool',
           'UnknownPool', 'worker_class', 'SLOW_SECONDS', 'REFRESH_MS']

REFRESH_MS = 2000
SLOW_SECONDS = 1.0       # a busy request this old is slow; ten times as old, stuck
HTML_TYPE = 'text/html; charset=utf-8'
JSON_TYPE = 'application/json'
TEXT_TYPE = 'text/plain; charset=utf-8'


class UnknownPool(Exception):
    """No [fcgi-program:x] pool of that name; the message says which."""


def text(value):
    """Any value as HTML text: made XML- and terminal-safe, then escaped."""
    return html.escape(safe_text(value), quote=True)


def safe_strings(value):
    """Every string in a status struct through safe_text: the script then
    escapes for HTML only, and draws what the server draws."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {k: safe_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [safe_strings(v) for v in value]
    return value


def pool_statuses(plugin, name=None):
    """The structs of getAllPoolStatus (or of one pool, in a list)."""
    groups = plugin.fcgi_groups()
    if name is not None:
        if name not in groups:
            raise UnknownPool('no fcgi pool named %r (known: %s)'
                              % (name, ', '.join(sorted(groups)) or 'none'))
        return [plugin.status(groups[name])]
    return [plugin.status(groups[n]) for n in sorted(groups)]


def respond(plugin, path, query='', headers=None):
    """(HTTP code, content type, body bytes) for a GET of ``path``: a page of
    httpserve.ROUTES."""
    params = parse_qs(query.lstrip('?'), keep_blank_values=True)
    name = params.get('pool', [None])[0]
    as_json = path.endswith('.json')
    mood = plugin.supervisord.options.mood
    if isinstance(mood, int) and mood < SupervisorStates.RUNNING:
        return 503, TEXT_TYPE, b'supervisord is shutting down\n'
    try:
        pools = pool_statuses(plugin, name)
    except UnknownPool as e:
        if as_json:
            return 404, JSON_TYPE, json.dumps({'error': str(e)}).encode()
        page = render_page([], name, error=str(e),
                           known=sorted(plugin.fcgi_groups()))
        return 404, HTML_TYPE, page.encode('utf-8')
    if as_json:
        body = json.dumps(safe_strings(pools[0] if name else pools))
        return 200, JSON_TYPE, body.encode()
    known = [p['name'] for p in pools] if name is None else sorted(plugin.fcgi_groups())
    return 200, HTML_TYPE, render_page(pools, name, known=known).encode('utf-8')


# -- the figures as text (the script has the same three) ---------------------

def duration(us):
    if us < 1000:
        return '%d \u00b5s' % us
    if us < 1000000:
        return '%d ms' % (us // 1000)
    return '%.1f s' % (us / 1e6)


def mebibytes(count):
    return '%.1f MiB' % (count / 1048576) if count > 0 else '-'


def figure(value):
    """-1 is what the kernel or a worker could not say."""
    return '-' if value == -1 else str(value)


def worker_class(process, slow=SLOW_SECONDS):
    """'busy', 'slow' or 'stuck' for a worker with a request in flight."""
    if process['worker_state'] not in BUSY_STATES:
        return ''
    seconds = process['request_duration'] / 1e6
    if process['requests_source'] == 'exact' and seconds >= 10 * slow:
        return 'stuck'
    if process['requests_source'] == 'exact' and seconds >= slow:
        return 'slow'
    return 'busy'


# -- the page -----------------------------------------------------------------

def _field(name, value, tag='span', attrs=''):
    return '<%s data-field="%s"%s>%s</%s>' % (tag, name, attrs, text(value), tag)


def _bar(part, whole, kind):
    percent = 0 if whole <= 0 or part <= 0 else min(100, round(100 * part / whole))
    return ('<span class="bar %s"><span style="width:%d%%"></span></span>'
            % (kind, percent))


def _pool_figures(pool):
    queue, backlog = pool['listen_queue'], pool['listen_queue_len']
    limit = len(pool['processes'])
    rows = [
        ('listen queue', '%s %s of %s backlog' % (
            _bar(queue, backlog, 'queue'), _field('listen_queue', figure(queue)),
            _field('listen_queue_len', figure(backlog)))),
        ('queue peak', '%s, drops %s' % (
            _field('max_listen_queue', pool['max_listen_queue']),
            _field('listen_drops', figure(pool['listen_drops'])))),
        ('processes', '%s active, %s idle, %s running of %s' % (
            _field('active_processes', pool['active_processes']),
            _field('idle_processes', pool['idle_processes']),
            _field('total_processes', pool['total_processes']),
            _field('limit', limit))),
        ('requests', '%s (%s), <span class="rate" data-rate="requests">- /s</span>'
         % (_field('requests', pool['requests']),
            _field('requests_source', pool['requests_source']))),
        ('accepted', '%s, <span class="rate" data-rate="accepted_conn">- /s</span>'
         % _field('accepted_conn', pool['accepted_conn'])),
        ('fairness', '%s, balance %s' % (_field('fairness', pool['fairness']),
                                         _field('balance', pool['balance']))),
        ('slow / ended', '%s / %s' % (_field('slow_requests', pool['slow_requests']),
                                      _field('terminated_requests',
                                             pool['terminated_requests']))),
    ]
    return ''.join('<div><dt>%s</dt><dd>%s</dd></div>' % row for row in rows)


WORKER_COLUMNS = ('name', 'pid', 'state', 'requests', 'rate', 'share', 'request',
                  'elapsed', 'last', 'cpu', 'memory')


def _worker_row(process, largest, slow):
    busy = process['worker_state'] in BUSY_STATES
    exact = process['requests_source'] == 'exact'
    request = ('%s %s' % (process['request_method'], process['request_uri'])).strip()
    last = process.get('last_request_duration', None if busy else process['request_duration'])
    cells = [
        _field('name', process['name']),
        _field('pid', process['pid'] or '-'),
        '<span class="st st-%s" data-field="worker_state">%s</span>' % (
            text(process['worker_state'] or 'none'), text(process['worker_state'] or '-')),
        _field('requests', process['requests']),
        '<span class="rate" data-rate="requests">-</span>',
        _bar(process['requests'], largest, 'share'),
        _field('request', request if busy else ''),
        _field('elapsed', duration(process['request_duration']) if busy and exact else ''),
        _field('last', duration(last) if exact and last is not None else ''),
        _field('cpu', '%.0f%%' % process['last_request_cpu'] if exact else ''),
        _field('memory', mebibytes(process['last_request_memory'])),
    ]
    return '<tr class="w %s" data-pid="%d">%s</tr>' % (
        worker_class(process, slow), process['pid'],
        ''.join('<td data-label="%s">%s</td>' % (label, cell)
                for label, cell in zip(WORKER_COLUMNS, cells)))


def render_pool(pool, slow=SLOW_SECONDS):
    processes = pool['processes']
    largest = max([p['requests'] for p in processes] or [0])
    socket_state = 'open' if pool['socket_open'] else 'closed'
    warnings = ''.join('<li>%s</li>' % text(w) for w in pool['warnings'])
    return (
        '<section class="pool" data-pool="%s"><h2><a href="?pool=%s">%s</a> '
        '<small>%s</small> <span class="sock sock-%s">socket %s</span></h2>'
        '<dl class="figures">%s</dl><div class="wrap"><table class="workers">'
        '<thead><tr>%s</tr></thead><tbody>%s</tbody></table></div>'
        '<ul class="warnings">%s</ul></section>' % (
            text(pool['name']), text(quote(pool['name'])), _field('name', pool['name']),
            _field('socket', pool['socket']), socket_state, socket_state,
            _pool_figures(pool), ''.join('<th>%s</th>' % c for c in WORKER_COLUMNS),
            ''.join(_worker_row(p, largest, slow) for p in processes), warnings))


def render_page(pools, selected=None, error='', known=(), now=None):
    """The whole page, as complete as the script would draw it."""
    stamp = time.strftime('%H:%M:%S', time.localtime(now))
    links = ['<a href="status">all pools</a>'] + [
        '<a href="?pool=%s">%s</a>' % (text(quote(n)), text(n)) for n in known]
    body = ''.join(render_pool(p) for p in pools)
    if error:
        body = '<p class="error">%s</p>' % text(error)
    elif not pools:
        body = '<p class="error">no fcgi-program pools configured</p>'
    config = json.dumps({'pool': selected, 'refresh': REFRESH_MS, 'slow': SLOW_SECONDS})
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>fcgi status%s</title><style>%s</style></head><body>'
        '<header><h1>fcgi status</h1><nav>%s</nav><p id="note">as of '
        '<span id="stamp">%s</span>; <span id="live">reload for new figures</span>'
        '</p></header><main id="pools">%s</main>'
        '<script type="application/json" id="config">%s</script>'
        '<script>%s</script></body></html>' % (
            ' - ' + text(selected) if selected else '', STYLE, ' '.join(links),
            stamp, body, config.replace('<', '\\u003c'), SCRIPT))
