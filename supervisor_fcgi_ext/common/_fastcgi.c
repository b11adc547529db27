/* The worker's per-request FastCGI work, in C: common/fastcgi.py's twin.
 *
 * A hello-world request through fcgi-worker spent most of its instructions
 * in the interpreter running the codec's small loops: a dozen record
 * headers, twenty name-value pairs and their latin-1 decoding, the framing
 * of the answer.  These functions do the same work in one call each, with
 * the same results; fastcgi.py uses them when this module is built (and
 * FCGI_PURE_PYTHON is not set), its own Python otherwise.  Anything but the
 * ordinary case (a record of another version, a pair cut short, params
 * over the limit, a record of another request) makes parse_request answer
 * None, and the worker's record-by-record path handles it, errors and all:
 * one set of rules, two speeds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "fcgi_record.h"

#define VERSION FCGI_VERSION
#define BEGIN_REQUEST FCGI_BEGIN_REQUEST
#define PARAMS FCGI_PARAMS
#define STDIN FCGI_STDIN
#define MAX_CONTENT FCGI_MAX_CONTENT

/* fastcgi.py sets this to its ProtocolError after import */
static PyObject *protocol_error;

static PyObject *raise_protocol(const char *format, Py_ssize_t value)
{
    PyErr_Format(protocol_error ? protocol_error : PyExc_ValueError, format, value);
    return NULL;
}

/* One pair length at content[*pos]; -1 when cut short. */
static inline Py_ssize_t pair_length(const unsigned char *c, Py_ssize_t *pos, Py_ssize_t end)
{
    Py_ssize_t at = *pos;
    if (at >= end)
        return -1;
    if (c[at] < 128) {
        *pos = at + 1;
        return c[at];
    }
    if (at + 4 > end)
        return -1;
    *pos = at + 4;
    return ((Py_ssize_t)(c[at] & 0x7f) << 24) | ((Py_ssize_t)c[at + 1] << 16)
           | ((Py_ssize_t)c[at + 2] << 8) | c[at + 3];
}

/* Whether c[0:end] is whole pairs; if not -1, with decode_pairs' message
 * as a ProtocolError when ``strict``. */
static int check_pairs(const unsigned char *c, Py_ssize_t end, int strict)
{
    Py_ssize_t pos = 0;
    while (pos < end) {
        Py_ssize_t name_len = pair_length(c, &pos, end);
        if (name_len < 0)
            goto short_at;
        Py_ssize_t value_len = pair_length(c, &pos, end);
        if (value_len < 0)
            goto short_at;
        if (pos + name_len + value_len > end) {
            if (strict)
                raise_protocol("name-value pair of %zd bytes past the end of its record",
                               name_len + value_len);
            return -1;
        }
        pos += name_len + value_len;
    }
    return 0;
short_at:
    if (strict)
        raise_protocol("name-value pair cut short at byte %zd", pos);
    return -1;
}

/* The str of the last request's name or value at this place in its
 * params, when it is the same bytes (web servers send the same names in
 * the same order, and many of the same values): made, and its hash
 * computed, once.  Short texts only, so the cache stays small; str is
 * immutable, so sharing one is safe.  Used with the GIL held. */
#define CACHED_PLACES 128
#define CACHED_LENGTH 128
static PyObject *cached[CACHED_PLACES];

static PyObject *latin1(Py_ssize_t place, const unsigned char *at, Py_ssize_t length)
{
    int cacheable = place < CACHED_PLACES && length <= CACHED_LENGTH;
    if (cacheable) {
        PyObject *text = cached[place];
        /* latin-1 text is one byte per character: compare the bytes */
        if (text != NULL && PyUnicode_GET_LENGTH(text) == length
                && memcmp(PyUnicode_DATA(text), at, length) == 0) {
            Py_INCREF(text);
            return text;
        }
    }
    PyObject *text = PyUnicode_DecodeLatin1((const char *)at, length, NULL);
    if (text != NULL && cacheable) {
        Py_INCREF(text);
        Py_XSETREF(cached[place], text);
    }
    return text;
}

/* Where decoded pairs go: straight into ``dict``, or (dict NULL) first
 * into ``pairs`` (new references), for params_dict to make the dict. */
#define HELD_PAIRS (CACHED_PLACES / 2)
typedef struct {
    PyObject *dict;
    PyObject *pairs[2 * HELD_PAIRS];
    Py_ssize_t count;
} Pairs;

static void release_pairs(Pairs *p)
{
    for (Py_ssize_t i = 0; i < 2 * p->count; i++)
        Py_DECREF(p->pairs[i]);
    p->count = 0;
}

/* A dict made with room for ``size`` keys (and what the worker adds) where
 * the C API lets us say so. */
static PyObject *new_dict(Py_ssize_t size)
{
#if PY_VERSION_HEX < 0x030D0000
    return _PyDict_NewPresized(size + 12);
#else
    (void)size;
    return PyDict_New();
#endif
}

static int put_pairs(PyObject *dict, Pairs *p)
{
    for (Py_ssize_t i = 0; i < p->count; i++)
        if (PyDict_SetItem(dict, p->pairs[2 * i], p->pairs[2 * i + 1]) < 0)
            return -1;
    return 0;
}

/* The params of the last request whose names were new, never handed out:
 * web servers send the same names in the same order (and, with the str
 * cache, the same name objects), so a request's dict is mostly a copy of
 * this one (one block copy, no insertions), with the values that changed
 * set.  Used with the GIL held. */
static PyObject *template_params;

/* The dict of p's pairs (held, all of them); NULL on memory errors. */
static PyObject *params_dict(Pairs *p)
{
    PyObject *key, *value, *dict;
    Py_ssize_t at = 0, i = 0;
    if (template_params != NULL && PyDict_GET_SIZE(template_params) == p->count) {
        while (PyDict_Next(template_params, &at, &key, &value) && key == p->pairs[2 * i])
            i++;
    }
    if (i == p->count && template_params != NULL) {
        if (!(dict = PyDict_Copy(template_params)))
            return NULL;
        for (at = 0, i = 0; PyDict_Next(template_params, &at, &key, &value); i++) {
            PyObject *now = p->pairs[2 * i + 1];
            if (value != now && PyDict_SetItem(dict, key, now) < 0) {
                Py_DECREF(dict);
                return NULL;
            }
        }
        return dict;
    }
    if (!(dict = new_dict(p->count)) || put_pairs(dict, p) < 0) {
        Py_XDECREF(dict);
        return NULL;
    }
    Py_XSETREF(template_params, PyDict_Copy(dict));
    if (template_params == NULL) {
        Py_DECREF(dict);
        return NULL;
    }
    return dict;
}

/* One pair into p; -1 on memory errors. */
static int add_pair(Pairs *p, PyObject *name, PyObject *value)
{
    if (p->dict == NULL && p->count < HELD_PAIRS) {
        p->pairs[2 * p->count] = name;
        p->pairs[2 * p->count + 1] = value;
        p->count++;
        return 0;
    }
    int failed = 0;
    if (p->dict == NULL) {       /* more pairs than held: the plain way from here */
        failed = !(p->dict = new_dict(p->count)) || put_pairs(p->dict, p) < 0;
        release_pairs(p);
    }
    failed = failed || PyDict_SetItem(p->dict, name, value) < 0;
    Py_DECREF(name);
    Py_DECREF(value);
    return failed ? -1 : 0;
}

/* The pairs of c[0:end] (checked whole) as latin-1 str into p, the first
 * at cache place *place; -1 on memory errors. */
static int decode_into(const unsigned char *c, Py_ssize_t end, Py_ssize_t *place, Pairs *p)
{
    Py_ssize_t pos = 0;
    while (pos < end) {
        Py_ssize_t name_len = pair_length(c, &pos, end);
        Py_ssize_t value_len = pair_length(c, &pos, end);
        PyObject *name = latin1((*place)++, c + pos, name_len);
        PyObject *value = name ? latin1((*place)++, c + pos + name_len, value_len) : NULL;
        if (value == NULL) {
            Py_XDECREF(name);
            return -1;
        }
        if (add_pair(p, name, value) < 0)
            return -1;
        pos += name_len + value_len;
    }
    return 0;
}

PyDoc_STRVAR(decode_params_doc,
"decode_params(content, into)\n--\n\n"
"The pairs of a PARAMS content stored in the dict ``into`` as latin-1 str;\n"
"ProtocolError (nothing stored) when a length runs past its end.");

static PyObject *decode_params(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    if (nargs != 2 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "decode_params(content, into): into is a dict");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *c = view.buf;
    Py_ssize_t place = 0;
    Pairs into;
    into.dict = args[1];
    into.count = 0;
    int rc = check_pairs(c, view.len, 1);
    if (rc == 0)
        rc = decode_into(c, view.len, &place, &into);
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* A complete record's header at b[pos]: its type, id, content length and
 * total size; 0 if incomplete or not version 1. */
static inline int header(const unsigned char *b, Py_ssize_t pos, Py_ssize_t n, int *kind,
                         unsigned *rid, Py_ssize_t *length, Py_ssize_t *size)
{
    if (n - pos < 8 || b[pos] != VERSION)
        return 0;
    *kind = b[pos + 1];
    *rid = ((unsigned)b[pos + 2] << 8) | b[pos + 3];
    *length = ((Py_ssize_t)b[pos + 4] << 8) | b[pos + 5];
    *size = 8 + *length + b[pos + 6];
    return n - pos >= *size;
}

PyDoc_STRVAR(parse_request_doc,
"parse_request(buf, pos, limit)\n--\n\n"
"A request's opening at buf[pos:] as nginx sends it: BEGIN_REQUEST, its\n"
"PARAMS records to the empty one (at most ``limit`` bytes), then the\n"
"complete STDIN records of that request that follow.  (end, request_id,\n"
"role, flags, params, param_bytes, stdin contents), or None for anything\n"
"else (the record-by-record path then decides).");

static PyObject *parse_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, limit;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "parse_request(buf, pos, limit)");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    limit = PyLong_AsSsize_t(args[2]);
    if ((pos == -1 || limit == -1) && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = view.buf;
    Py_ssize_t n = view.len, length, size, param_bytes = 0, place = 0;
    PyObject *params = NULL, *stdin_list = NULL, *result = NULL;
    Pairs pairs;
    pairs.dict = NULL;
    pairs.count = 0;
    int kind;
    unsigned rid, id;
    if (pos < 0 || !header(b, pos, n, &kind, &rid, &length, &size)
            || kind != BEGIN_REQUEST || length != 8)
        goto none;
    unsigned role = ((unsigned)b[pos + 8] << 8) | b[pos + 9];
    unsigned flags = b[pos + 10];
    pos += size;
    for (;;) {
        if (!header(b, pos, n, &kind, &id, &length, &size) || kind != PARAMS || id != rid)
            goto none;
        const unsigned char *content = b + pos + 8;
        pos += size;
        if (length == 0)
            break;
        param_bytes += length;
        if (param_bytes > limit || check_pairs(content, length, 0) < 0)
            goto none;
        if (decode_into(content, length, &place, &pairs) < 0)
            goto done;
    }
    params = pairs.dict != NULL ? pairs.dict : params_dict(&pairs);
    pairs.dict = NULL;
    if (params == NULL || !(stdin_list = PyList_New(0)))
        goto done;
    /* as the worker's loop: every complete STDIN record of this request */
    while (n - pos >= 8 && b[pos + 1] == STDIN && (((unsigned)b[pos + 2] << 8) | b[pos + 3]) == rid) {
        if (b[pos] != VERSION)
            goto none;          /* the record-by-record path raises for it */
        if (!header(b, pos, n, &kind, &id, &length, &size))
            break;
        PyObject *chunk = PyBytes_FromStringAndSize((const char *)b + pos + 8, length);
        if (chunk == NULL || PyList_Append(stdin_list, chunk) < 0) {
            Py_XDECREF(chunk);
            goto done;
        }
        Py_DECREF(chunk);
        pos += size;
    }
    PyObject *items[7] = {PyLong_FromSsize_t(pos), PyLong_FromUnsignedLong(rid),
                          PyLong_FromUnsignedLong(role), PyLong_FromUnsignedLong(flags),
                          params, PyLong_FromSsize_t(param_bytes), stdin_list};
    params = stdin_list = NULL;        /* the tuple's, or dropped with it */
    if ((result = PyTuple_New(7)) != NULL) {
        for (int i = 0; i < 7; i++) {
            if (items[i] == NULL)
                Py_CLEAR(result);
            if (result != NULL)
                PyTuple_SET_ITEM(result, i, items[i]);
            else
                Py_XDECREF(items[i]);
        }
    } else {
        for (int i = 0; i < 7; i++)
            Py_XDECREF(items[i]);
    }
    goto done;
none:
    Py_INCREF(Py_None);
    result = Py_None;
done:
    release_pairs(&pairs);
    Py_XDECREF(pairs.dict);
    Py_XDECREF(params);
    Py_XDECREF(stdin_list);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(frame_stream_doc,
"frame_stream(kind, request_id, data, end=False)\n--\n\n"
"encode_stream's records as one bytes object.");

static PyObject *frame_stream(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    if (nargs < 3 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "frame_stream(kind, request_id, data, end=False)");
        return NULL;
    }
    long kind = PyLong_AsLong(args[0]);
    long rid = PyLong_AsLong(args[1]);
    int end = nargs == 4 ? PyObject_IsTrue(args[3]) : 0;
    if (PyErr_Occurred() || end < 0)
        return NULL;
    if (kind < 0 || kind > 255 || rid < 0 || rid > 65535) {
        PyErr_SetString(PyExc_ValueError, "record type or request id out of range");
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t len = view.len, full = len / MAX_CONTENT, rest = len % MAX_CONTENT;
    Py_ssize_t total = full * (8 + MAX_CONTENT) + (rest ? 8 + ((rest + 7) & ~7) : 0)
                       + (end ? 8 : 0);
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out != NULL) {
        unsigned char *at = (unsigned char *)PyBytes_AS_STRING(out);
        const unsigned char *from = view.buf;
        for (Py_ssize_t left = len; left > 0;) {
            Py_ssize_t chunk = left < MAX_CONTENT ? left : MAX_CONTENT;
            int padding = (int)(-chunk & 7);
            fcgi_put_header(at, (int)kind, (unsigned)rid, chunk, padding);
            memcpy(at + 8, from, chunk);
            memset(at + 8 + chunk, 0, padding);
            at += 8 + chunk + padding;
            from += chunk;
            left -= chunk;
        }
        if (end)
            fcgi_put_header(at, (int)kind, (unsigned)rid, 0, 0);
    }
    PyBuffer_Release(&view);
    return out;
}

static PyObject *set_protocol_error(PyObject *module, PyObject *cls)
{
    Py_INCREF(cls);
    Py_XSETREF(protocol_error, cls);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode_params", (PyCFunction)(void (*)(void))decode_params, METH_FASTCALL,
     decode_params_doc},
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     parse_request_doc},
    {"frame_stream", (PyCFunction)(void (*)(void))frame_stream, METH_FASTCALL,
     frame_stream_doc},
    {"set_protocol_error", set_protocol_error, METH_O,
     "The exception class the codec raises (fastcgi.ProtocolError)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastcgi",
    "common/fastcgi.py's per-request functions in C (see the file's comment).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__fastcgi(void)
{
    return PyModule_Create(&module);
}
