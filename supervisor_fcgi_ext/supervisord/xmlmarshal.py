"""XML-RPC replies of our own, written faster than xmlrpc.client writes them.

supervisor marshals every reply with xmlrpc.client's pure-Python Marshaller,
about 1 us a struct member: at 256 workers a getPoolStatus reply (256
process entries of 23 fields) took 5-9 ms of supervisord's loop, and
`xmlrpc_safe` before it as much again.  `render` does both at once: a
struct whose keys and value types were seen before is written by the
template made for that shape (the process entries all share one).  FILL
(_xmlfill.c, when built) writes it in one C pass: the template's pieces
and, between them, each value as xmlrpc.client writes it; in Python it is
one %-format, its strings checked together (one join) and escaped one by
one only when one needs it.  What FILL does not take (a str to escape, an
int past 32 bits) the Python does; a struct of no template (a key to
rewrite, a type of none) or with such an int is written member by member,
anything unusual in it the very way xmlrpc.client does.  The XML is what
``xmlrpc.client.dumps((xmlrpc_safe(value),), methodresponse=True)`` writes,
byte for byte, on either path (tests/supervisord/test_xmlmarshal.py), its
parts joined once, at the end.  At 256 workers: 13k instructions a worker
with FILL, 63k in Python alone, where the templates' %-format took 70k and
xmlrpc_safe + xmlrpc.client 311k.

A `Reply` is what a method returns: the dict an in-process caller reads,
carrying its XML, and registered in Marshaller.dispatch so that
supervisor's xmlrpc_marshal writes that XML as it is.  Rendering happens in
the method, so a failure is the method's one-line fault.
"""
import operator
import os
import xmlrpc.client

from supervisor_fcgi_ext.common.text import safe_text

try:
    from supervisor_fcgi_ext.supervisord._xmlfill import fill as C_FILL
except ImportError:          # not built: no compiler or Python headers
    C_FILL = None

__all__ = ['XMLRPC_INT_MAX', 'MAX_SHAPES', 'C_FILL', 'FILL', 'xmlrpc_safe', 'xml_text',
           'Renderer', 'render', 'Reply', 'ListReply', 'reply']

XMLRPC_INT_MAX = 2 ** 31 - 1
# shapes (keys, value types) of the structs written: ours are a handful
# (pool, process entry, pm fields); cleared past this many, so odd ones
# cannot grow it
MAX_SHAPES = 64
_TAGS = {bool: 'boolean', int: 'int', float: 'double', str: 'string'}
_CODES = {bool: '%d', int: '%d', float: '%r', str: '%s'}
_FORMATS = {kind: '<%s>%s</%s>' % (tag, _CODES[kind], tag) for kind, tag in _TAGS.items()}
# _xmlfill.fill, the C twin of a template's %-format, unless FCGI_PURE_PYTHON
# is set (None: the Python alone)
FILL = None if os.environ.get('FCGI_PURE_PYTHON') else C_FILL
_LIST_OPEN, _LIST_CLOSE = '<value><array><data>\n', '</data></array></value>\n'
_STRUCT_OPEN, _STRUCT_CLOSE = '<value><struct>\n', '</struct></value>\n'
_NAME, _MEMBER_CLOSE = '<member>\n<name>%s</name>\n', '</member>\n'
_PARAMS_HEAD = '<params>\n<param>\n'
_PARAMS_TAIL = '</param>\n</params>\n'


def xmlrpc_safe(value):
    """XML-RPC ints are 32-bit: larger ones travel as doubles; text XML 1.0
    forbids would make the client fail to parse the whole reply."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -XMLRPC_INT_MAX <= value <= XMLRPC_INT_MAX:
        return float(value)
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(k): xmlrpc_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [xmlrpc_safe(v) for v in value]
    return value


def xml_text(text):
    """A string as it travels: made safe, then escaped as xmlrpc.client does."""
    return xmlrpc.client.escape(safe_text(text))


def _changes(text):
    """Whether xml_text changes ``text`` (cheaper than its answer)."""
    return safe_text(text) != text or '&' in text or '<' in text or '>' in text


def _picker(indices):
    """A function giving the tuple of a sequence's items at ``indices``."""
    if len(indices) > 1:
        return operator.itemgetter(*indices)
    return lambda values: tuple(values[i] for i in indices)


class _Shape:
    """A struct's template for one tuple of keys and of value types (each
    an exact bool, int, float or str; keys that xmlrpc_safe leaves alone):
    a %-format, and its text around the values (``pieces``, for FILL)."""

    def __init__(self, keys, types):
        self.keys, self.types = keys, types
        pieces, text = [], _STRUCT_OPEN
        for key, kind in zip(keys, types):
            tag = _TAGS[kind]
            pieces.append(text + _NAME % xmlrpc.client.escape(key) + '<value><%s>' % tag)
            text = '</%s></value>\n' % tag + _MEMBER_CLOSE
        pieces.append(text + _STRUCT_CLOSE)
        self.pieces = tuple(pieces)
        # the pieces' '%' doubled: the only placeholders are the values'
        self.template = ''.join(piece.replace('%', '%%') + _CODES[kind]
                                for piece, kind in zip(pieces, types)) \
            + pieces[-1].replace('%', '%%')
        self.texts = [i for i, t in enumerate(types) if t is str]
        self.ints = _picker([i for i, t in enumerate(types) if t is int])
        self.text_values = _picker(self.texts)


def _templated(keys, types):
    return (all(t in _FORMATS for t in types)
            and all(type(k) is str and safe_text(k) == k for k in keys))


class Renderer:
    """Writes values; keeps the templates of the struct shapes seen.
    ``fill``: FILL, or None for the Python alone."""

    def __init__(self, fill=FILL):
        self.shapes = {}
        self.last = None
        self.fill = fill

    def render(self, value):
        """The <value> XML of ``value`` (with xmlrpc_safe applied)."""
        out = []                # one join at the end: no copy a level
        self._write(value, out)
        return ''.join(out)

    def _write(self, value, out):
        kind = type(value)
        if kind is dict:
            xml = self._struct(value)
            if xml is None:
                self._members(value, out)
            else:
                out.append(xml)
        elif kind is list or kind is tuple:
            out.append(_LIST_OPEN)
            for item in value:
                self._write(item, out)
            out.append(_LIST_CLOSE)
        elif kind is str:
            out.append('<value><string>%s</string></value>\n' % xml_text(value))
        elif kind in _FORMATS and (kind is not int
                                   or -XMLRPC_INT_MAX <= value <= XMLRPC_INT_MAX):
            out.append('<value>%s</value>\n' % (_FORMATS[kind] % value))
        else:
            out.append(_reference(value))

    def _shape(self, keys, types):
        """The template of a shape, or None: the shape has none."""
        shape = self.last     # a pool's process entries come one after another
        if shape is not None and shape.keys == keys and shape.types == types:
            return shape
        shape = self.shapes.get((keys, types), False)
        if shape is False:
            if len(self.shapes) >= MAX_SHAPES:
                self.shapes.clear()
            shape = self.shapes[keys, types] = (
                _Shape(keys, types) if _templated(keys, types) else None)
        if shape is not None:
            self.last = shape
        return shape

    def _struct(self, struct):
        """The XML of a struct of a shape with a template (None: none fits):
        FILL's if it can, first for the shape of the last one."""
        fill, tried = self.fill, self.last
        if fill is not None and tried is not None:
            xml = fill(struct, tried.keys, tried.types, tried.pieces)
            if xml is not None:
                return xml
        values = tuple(struct.values())
        shape = self._shape(tuple(struct), tuple(map(type, values)))
        if shape is None:
            return None
        if fill is not None and shape is not tried:
            xml = fill(struct, shape.keys, shape.types, shape.pieces)
            if xml is not None:
                return xml
        ints = shape.ints(values)
        if ints and (min(ints) < -XMLRPC_INT_MAX or max(ints) > XMLRPC_INT_MAX):
            return None
        texts = ''.join(shape.text_values(values))
        if _changes(texts):             # one of them changes (rare): each one
            values = list(values)
            for i in shape.texts:
                values[i] = xml_text(values[i])
            values = tuple(values)
        return shape.template % values

    def _members(self, struct, out):
        if not all(type(k) is str and safe_text(k) == k for k in struct):
            out.append(_reference(struct))     # keys xmlrpc_safe changes (or merges)
            return
        out.append(_STRUCT_OPEN)
        for key, value in struct.items():
            out.append(_NAME % xmlrpc.client.escape(key))
            self._write(value, out)
            out.append(_MEMBER_CLOSE)
        out.append(_STRUCT_CLOSE)


def _reference(value):
    """The <value> XML of ``value`` as xmlrpc.client writes xmlrpc_safe(value)."""
    params = xmlrpc.client.Marshaller().dumps((xmlrpc_safe(value),))
    return params[len(_PARAMS_HEAD):-len(_PARAMS_TAIL)]


RENDERER = Renderer()
render = RENDERER.render


class Reply(dict):
    """A method's answer: the dict, and the XML it travels as (``xml``)."""

    def __init__(self, value, xml):
        super().__init__(value)
        self.xml = xml


class ListReply(list):
    """As Reply, for an array answer."""

    def __init__(self, value, xml):
        super().__init__(value)
        self.xml = xml


def reply(value):
    """``value`` (a dict or a list) as a Reply: rendered now."""
    xml = render(value)
    return (Reply if isinstance(value, dict) else ListReply)(value, xml)


def _dump_reply(marshaller, value, write):
    write(value.xml)


xmlrpc.client.Marshaller.dispatch[Reply] = _dump_reply
xmlrpc.client.Marshaller.dispatch[ListReply] = _dump_reply
