"""Text from a worker made safe for XML-RPC, HTML and terminals.

A worker (or whoever sends it a request) controls the method and URI its
slot holds.  XML 1.0 forbids most C0 controls, lone surrogates, U+FFFE and
U+FFFF: one of them in a status reply makes every client fail to parse it.
Controls also move a terminal's cursor or change its colours.  So such
characters are percent-encoded as a URI would carry them (their UTF-8
bytes), which keeps the text readable and one line.
"""
from __future__ import annotations

import re

__all__ = ['safe_text']

# C0 controls (tab and newlines too: one line), DEL, C1 controls, surrogates,
# and the two noncharacters XML 1.0 excludes.
_UNSAFE = re.compile('[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]')


def _escape(match):
    char = match.group()
    if '\udc80' <= char <= '\udcff':       # a raw byte kept by surrogateescape
        data = bytes([ord(char) - 0xdc00])
    else:
        data = char.encode('utf-8', 'surrogatepass')
    return ''.join('%%%02X' % byte for byte in data)


def safe_text(text):
    """``text`` with every XML-forbidden or control character percent-encoded.

    Idempotent: what it returns holds none of them, so a second pass is a no-op.
    """
    if not isinstance(text, str):
        text = str(text)
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)
