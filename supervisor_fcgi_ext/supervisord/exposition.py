"""The Prometheus text format 0.0.4 and OpenMetrics 1.0.0, written straight
from plain values into text.

prometheus_client's encoders cost about 10 us a sample (a Sample namedtuple
per value through add_metric, then a label dict sorted and escaped per line),
and a pool of 256 workers has some 4000 samples: 30-90 ms of supervisord's
loop a scrape.  Here each family's header and the shape of each sample line
are made once per format and escaping scheme, label values are escaped once
per value that exists, and a line is one %-format.  The text is what
prometheus_client's generate_latest writes for the same families, byte for
byte (tests/supervisord/test_exposition.py holds it to that), so
prometheus_client stays the reference, and chooses the format by Accept.

Only what our families need: counters (no _created), gauges and histograms
(with a sum, no exemplars), with names valid in the legacy charset.
"""

from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import (ALLOWUTF8, DOTS, UNDERSCORES,
                                                      VALUES, escape_label_name,
                                                      escape_metric_name)
from prometheus_client.utils import floatToGoString

__all__ = ['OPENMETRICS', 'SUFFIXES', 'escape_value', 'negotiate', 'Dialect', 'Kept',
           'Page']

OPENMETRICS = 'application/openmetrics-text'
ESCAPINGS = (ALLOWUTF8, UNDERSCORES, DOTS, VALUES)
# the samples of a family, by kind: name suffix -> label names added
SUFFIXES = {'counter': {'_total': ()}, 'gauge': {'': ()},
            'histogram': {'_bucket': ('le',), '_count': (), '_sum': ()}}
_NEG_INF = float('-inf')


def escape_value(value):
    """A label value as both formats write it (a str: no other is valid)."""
    return value.replace('\\', r'\\').replace('\n', r'\n').replace('"', r'\"')


def negotiate(accept):
    """(openmetrics?, escaping, content type) for an Accept header, as
    prometheus_client chooses; the content type names the escaping when the
    scraper asked for one."""
    _, content_type = choose_encoder(accept)
    escaping = UNDERSCORES
    if '; escaping=' in content_type:
        escaping = content_type.rpartition('; escaping=')[2]
    if escaping not in ESCAPINGS:
        escaping = UNDERSCORES
    return content_type.startswith(OPENMETRICS), escaping, content_type


def _sample_name(name, openmetrics, escaping):
    # prometheus_client's OpenMetrics writer value-escapes every sample name
    # under 'values', legacy-valid or not (its headers it leaves alone)
    if openmetrics and escaping == VALUES:
        return 'U__' + name.replace('_', '__')
    return escape_metric_name(name, escaping)


def _header(name, kind, text, openmetrics, escaping):
    if openmetrics:
        text = escape_value(text)
    else:
        text = text.replace('\\', r'\\').replace('\n', r'\n')
        name += '_total' if kind == 'counter' else ''
    name = escape_metric_name(name, escaping)
    return '# HELP %s %s\n# TYPE %s %s\n' % (name, text, name, kind)


def _template(sample, labels, openmetrics, escaping):
    """(%-format of a line: label values in sorted label-name order, then the
    value; None or the order of the label values given in ``labels``' order)."""
    order = sorted(range(len(labels)), key=labels.__getitem__)
    text = ','.join('%s="%%s"' % escape_label_name(labels[i], escaping) for i in order)
    line = _sample_name(sample, openmetrics, escaping) + ('{%s}' % text if text else '')
    return line + ' %s\n', None if order == sorted(order) else tuple(order)


class Dialect:
    """One format and escaping scheme for a list of families (name, kind,
    label names, help): their headers and line templates, made once."""

    def __init__(self, families, openmetrics, escaping):
        self.headers = {}
        # a counter's or gauge's template under its family's name, a
        # histogram's under its sample names: (format, order)
        self.templates = {}
        for name, kind, labels, text in families:
            self.headers[name] = _header(name, kind, text, openmetrics, escaping)
            samples = SUFFIXES[kind]
            for suffix, extra in samples.items():
                key = name if len(samples) == 1 else name + suffix
                self.templates[key] = _template(name + suffix, tuple(labels) + extra,
                                                openmetrics, escaping)
        self.end = '# EOF\n' if openmetrics else ''


class Kept:
    """What ``make`` gave for each value of the last scrape, kept for the
    next: only the values that scrape wrote (the pools', processes' and
    states' names; start times, pids; or, through `swap`, whatever its
    caller keeps of them), so it holds no more than what exists, whatever
    the requests are."""

    def __init__(self, make=None):
        self.make = make
        self.last = {}

    def swap(self):
        """(what the last scrape kept, an empty dict for this one's to keep)."""
        last, self.last = self.last, {}
        return last, self.last

    def scrape(self):
        """A function giving make(value), for one scrape; what it gave is
        what the next scrape finds."""
        last, known = self.swap()
        make = self.make

        def give(value):
            try:
                return known[value]
            except KeyError:
                text = known[value] = last.get(value) or make(value)
                return text
        return give


class Page:
    """One scrape being written: lines by family, joined in the dialect's
    family order, every family's header even without a sample."""

    def __init__(self, dialect, escape, big_number=floatToGoString):
        self.dialect = dialect
        self.templates = dialect.templates
        self.escape = escape
        self.big_number = big_number
        self.lines = {name: [] for name in dialect.headers}

    def add(self, family, labels, value, sample=None):
        """One sample: see `extend`."""
        line, order = self.templates[sample or family]
        if order is not None:
            labels = tuple(labels[i] for i in order)
        self.lines[family].append(line % (*labels, self.number(value)))

    def extend(self, family, rows, sample=None):
        """Samples of a family (of a counter or gauge unless ``sample`` names
        it): (labels, value) pairs, label values escaped, in the family's
        label order.  A value is written as floatToGoString writes it: below
        1e6, where Go's exponent form starts, that is the float's repr."""
        line, order = self.templates[sample or family]
        if order is not None:
            rows = [(tuple(labels[i] for i in order), value) for labels, value in rows]
        big = self.big_number
        self.lines[family] += [
            line % (*labels, repr(value) if _NEG_INF < value < 1e6 else big(value))
            for labels, value in ((labels, float(value)) for labels, value in rows)]

    def number(self, value):
        """A value's text, as `extend` writes it."""
        value = float(value)
        return repr(value) if _NEG_INF < value < 1e6 else self.big_number(value)

    def head(self, family, labels):
        """A counter's or gauge's sample line up to its value (exclusive),
        for the value to be written later."""
        line, order = self.templates[family]
        if order is not None:
            labels = tuple(labels[i] for i in order)
        return (line % (*labels, ''))[:-1]

    def histogram(self, family, labels, buckets, sum_value):
        """As HistogramMetricFamily.add_metric: buckets [(le, count)] end at
        +Inf, whose count is _count; no _count nor _sum without a sum."""
        for le, count in buckets:
            self.add(family, labels + (self.escape(le),), count, family + '_bucket')
        if sum_value is not None:
            self.add(family, labels, buckets[-1][1], family + '_count')
            self.add(family, labels, sum_value, family + '_sum')

    def text(self):
        parts = []
        for name, header in self.dialect.headers.items():
            parts.append(header)
            parts += self.lines[name]
        parts.append(self.dialect.end)
        return ''.join(parts).encode('utf-8')
