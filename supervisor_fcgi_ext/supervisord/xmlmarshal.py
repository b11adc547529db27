"""XML-RPC replies of our own, written faster than xmlrpc.client writes them.

supervisor marshals every reply with xmlrpc.client's pure-Python Marshaller,
about 1 us a struct member: at 256 workers a getPoolStatus reply (256
process entries of 22 fields) took 5-9 ms of supervisord's loop, and
`xmlrpc_safe` before it as much again.  `render` does both at once: a
struct whose keys and value types were seen before is one %-format of the
template made for that shape (the process entries all share one), its
strings checked together (one join) and escaped one by one only when one
needs it.  The XML is what ``xmlrpc.client.dumps((xmlrpc_safe(value),),
methodresponse=True)`` writes, byte for byte (tests/supervisord/
test_xmlmarshal.py): anything unusual (a big int, a key to rewrite, a type
of no template) goes that very way.  At 256 workers: 70k instructions a
worker where the two took 311k (bench_metrics --instructions).

A `Reply` is what a method returns: the dict an in-process caller reads,
carrying its XML, and registered in Marshaller.dispatch so that
supervisor's xmlrpc_marshal writes that XML as it is.  Rendering happens in
the method, so a failure is the method's one-line fault.
"""
import operator
import xmlrpc.client

from supervisor_fcgi_ext.common.text import safe_text

__all__ = ['XMLRPC_INT_MAX', 'MAX_SHAPES', 'xmlrpc_safe', 'xml_text', 'Renderer', 'render',
           'Reply', 'ListReply', 'reply']

XMLRPC_INT_MAX = 2 ** 31 - 1
# shapes (keys, value types) of the structs written: ours are a handful
# (pool, process entry, pm fields); cleared past this many, so odd ones
# cannot grow it
MAX_SHAPES = 64
_FORMATS = {bool: '<boolean>%d</boolean>', int: '<int>%d</int>',
            float: '<double>%r</double>', str: '<string>%s</string>'}
_LIST = '<value><array><data>\n%s</data></array></value>\n'
_STRUCT = '<value><struct>\n%s</struct></value>\n'
_MEMBER = '<member>\n<name>%s</name>\n%s</member>\n'
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
    an exact bool, int, float or str; keys that xmlrpc_safe leaves alone)."""

    def __init__(self, keys, types):
        self.keys, self.types = keys, types
        # the keys' '%' doubled: the only placeholders are the values'
        members = ''.join(_MEMBER % (xmlrpc.client.escape(k).replace('%', '%%'),
                                     '<value>%s</value>\n' % _FORMATS[t])
                          for k, t in zip(keys, types))
        self.template = _STRUCT % members
        self.texts = [i for i, t in enumerate(types) if t is str]
        self.ints = _picker([i for i, t in enumerate(types) if t is int])
        self.text_values = _picker(self.texts)


def _templated(keys, types):
    return (all(t in _FORMATS for t in types)
            and all(type(k) is str and safe_text(k) == k for k in keys))


class Renderer:
    """Writes values; keeps the templates of the struct shapes seen."""

    def __init__(self):
        self.shapes = {}
        self.last = None

    def render(self, value):
        """The <value> XML of ``value`` (with xmlrpc_safe applied)."""
        kind = type(value)
        if kind is dict:
            return self._struct(value)
        if kind is list or kind is tuple:
            return _LIST % ''.join([self.render(v) for v in value])
        if kind is str:
            return '<value><string>%s</string></value>\n' % xml_text(value)
        if kind is int and not -XMLRPC_INT_MAX <= value <= XMLRPC_INT_MAX:
            return _reference(value)
        if kind in _FORMATS:
            return '<value>%s</value>\n' % (_FORMATS[kind] % value)
        return _reference(value)

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
        values = tuple(struct.values())
        shape = self._shape(tuple(struct), tuple(map(type, values)))
        if shape is None:
            return self._members(struct)
        ints = shape.ints(values)
        if ints and (min(ints) < -XMLRPC_INT_MAX or max(ints) > XMLRPC_INT_MAX):
            return self._members(struct)
        texts = ''.join(shape.text_values(values))
        if _changes(texts):             # one of them changes (rare): each one
            values = list(values)
            for i in shape.texts:
                values[i] = xml_text(values[i])
            values = tuple(values)
        return shape.template % values

    def _members(self, struct):
        if not all(type(k) is str and safe_text(k) == k for k in struct):
            return _reference(struct)      # keys xmlrpc_safe changes (or merges)
        return _STRUCT % ''.join([_MEMBER % (xmlrpc.client.escape(k), self.render(v))
                                  for k, v in struct.items()])


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
