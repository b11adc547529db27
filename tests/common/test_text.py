"""safe_text: worker text made safe for XML-RPC and terminals."""
from __future__ import annotations

import random
import unittest
import xmlrpc.client

from supervisor_fcgi_ext.common.text import safe_text


def random_text(rng, size):
    """Characters from every plane, weighted towards the dangerous ones."""
    pools = [(0, 0x20), (0x7f, 0xa0), (0xd800, 0xe000), (0xfffe, 0x10000),
             (0x20, 0x7f), (0xa0, 0xd800), (0xe000, 0xfffe), (0x10000, 0x110000)]
    out = []
    for _ in range(size):
        lo, hi = rng.choice(pools)
        out.append(chr(rng.randrange(lo, hi)))
    return ''.join(out)


class SafeTextTests(unittest.TestCase):

    def test_plain_text_is_unchanged(self):
        for text in ('', '/index.php?a=b&c=%41', 'GET', 'caf\u00e9 \u2603 \U0001f600'):
            self.assertEqual(safe_text(text), text)

    def test_xml_forbidden_characters_are_percent_encoded_as_utf8(self):
        self.assertEqual(safe_text('/app?\ufffe'), '/app?%EF%BF%BE')
        self.assertEqual(safe_text('\uffff'), '%EF%BF%BF')
        self.assertEqual(safe_text('a\x00b\x01c'), 'a%00b%01c')

    def test_controls_are_encoded_for_terminals(self):
        self.assertEqual(safe_text('\x1b[31mred\t\r\n\x7f'), '%1B[31mred%09%0D%0A%7F')
        self.assertEqual(safe_text('\x85\x9b'), '%C2%85%C2%9B')

    def test_surrogates_are_encoded(self):
        self.assertEqual(safe_text('\udcff'), '%FF')       # surrogateescape'd byte
        self.assertEqual(safe_text('\ud800'), '%ED%A0%80')  # lone high surrogate

    def test_non_text_is_made_text(self):
        self.assertEqual(safe_text(12), '12')

    def test_random_strings_survive_xmlrpc_and_are_idempotent(self):
        rng = random.Random(11)
        for _ in range(2000):
            text = random_text(rng, rng.randrange(0, 40))
            safe = safe_text(text)
            self.assertEqual(safe_text(safe), safe)
            self.assertFalse(any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in safe))
            payload = xmlrpc.client.dumps(({'uri': safe, 'list': [safe]},),
                                          methodresponse=True)
            (loaded,), _ = xmlrpc.client.loads(payload)
            self.assertEqual(loaded, {'uri': safe, 'list': [safe]})

    def test_unsafe_text_fails_xmlrpc_without_it(self):
        # the check above can fail: the raw text breaks the parser
        payload = xmlrpc.client.dumps(('/app?\ufffe\x01',), methodresponse=True)
        with self.assertRaises(Exception):
            xmlrpc.client.loads(payload)
