/* One XML-RPC struct of a known shape written in C: xmlmarshal.py's twin.
 *
 * getPoolStatus at 256 workers wrote 256 process entries of 23 members
 * each; in Python, one %-format of the shape's template and the checks
 * around it cost 7-12 us an entry in supervisord's loop.  fill() writes
 * the same text in one pass: the template's pieces, and between them each
 * value as xmlrpc.client writes it (an int in decimal, a bool as 0 or 1, a
 * float as its repr, a str as it is).  Anything but that ordinary case (a
 * key or a type not the shape's, an int past 32 bits, a str that
 * xmlmarshal.xml_text would change) answers None, and xmlmarshal's Python
 * writes that struct: one set of rules, two speeds.  No Python code runs
 * while the dict is read (exact types only), so it cannot change under it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define INT_LIMIT 2147483647LL      /* xmlmarshal.XMLRPC_INT_MAX */
#define STACK_BYTES 8192

/* UTF-8 text being written: on the stack, moved to the heap past it */
struct out {
    char *data;
    Py_ssize_t len, cap;
    int ascii;              /* all written so far is ASCII */
    char stack[STACK_BYTES];
};

static int grow(struct out *o, Py_ssize_t need)
{
    Py_ssize_t cap = o->cap;
    while (cap - o->len < need) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = o->data == o->stack ? PyMem_Malloc(cap) : PyMem_Realloc(o->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (o->data == o->stack)
        memcpy(data, o->stack, o->len);
    o->data = data;
    o->cap = cap;
    return 0;
}

static inline int put(struct out *o, const char *s, Py_ssize_t n)
{
    if (o->cap - o->len < n && grow(o, n) < 0)
        return -1;
    memcpy(o->data + o->len, s, n);
    o->len += n;
    return 0;
}

/* An int of 32 bits in decimal, as '%d' writes it. */
static int put_int(struct out *o, long long v)
{
    char digits[24], *end = digits + sizeof digits, *d = end;
    unsigned long long u = v < 0 ? -(unsigned long long)v : (unsigned long long)v;
    do {
        *--d = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--d = '-';
    return put(o, d, end - d);
}

/* Whether xml_text leaves code point c alone: safe_text's set (C0, DEL,
 * C1, surrogates, U+FFFE, U+FFFF) and what escape() changes (& < >). */
static inline int plain(Py_UCS4 c)
{
    if (c < 0x80)
        return c >= 0x20 && c != 0x7f && c != '&' && c != '<' && c != '>';
    if (c <= 0x9f)
        return 0;
    return !(c >= 0xd800 && c <= 0xdfff) && c != 0xfffe && c != 0xffff;
}

/* Before 3.12 a str made by the old C API may not be "ready" (no kind yet). */
static inline int ready(PyObject *text)
{
#if PY_VERSION_HEX < 0x030C0000
    return PyUnicode_READY(text);
#else
    (void)text;
    return 0;
#endif
}

/* A str written as UTF-8; 1: it needs xml_text (nothing written); -1: error. */
static int put_text(struct out *o, PyObject *text)
{
    if (ready(text) < 0)
        return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (PyUnicode_IS_ASCII(text)) {
        const unsigned char *s = data;
        for (Py_ssize_t i = 0; i < n; i++)
            if (!plain(s[i]))
                return 1;
        return put(o, (const char *)s, n);
    }
    if (o->cap - o->len < 4 * n && grow(o, 4 * n) < 0)
        return -1;
    o->ascii = 0;
    char *w = o->data + o->len;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (!plain(c))
            return 1;
        if (c < 0x80) {
            *w++ = (char)c;
        } else if (c < 0x800) {
            *w++ = (char)(0xc0 | (c >> 6));
            *w++ = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            *w++ = (char)(0xe0 | (c >> 12));
            *w++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *w++ = (char)(0x80 | (c & 0x3f));
        } else {
            *w++ = (char)(0xf0 | (c >> 18));
            *w++ = (char)(0x80 | ((c >> 12) & 0x3f));
            *w++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *w++ = (char)(0x80 | (c & 0x3f));
        }
    }
    o->len = w - o->data;
    return 0;
}

/* One value of the shape's type; 1: not the ordinary case; -1: error. */
static int put_value(struct out *o, PyObject *value, PyObject *type)
{
    if ((PyObject *)Py_TYPE(value) != type)
        return 1;
    if (type == (PyObject *)&PyUnicode_Type)
        return put_text(o, value);
    if (type == (PyObject *)&PyBool_Type)
        return put(o, value == Py_True ? "1" : "0", 1);
    if (type == (PyObject *)&PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow || v > INT_LIMIT || v < -INT_LIMIT)
            return 1;
        return put_int(o, v);
    }
    if (type == (PyObject *)&PyFloat_Type) {     /* as float.__repr__ writes it */
        char *repr = PyOS_double_to_string(PyFloat_AS_DOUBLE(value), 'r', 0,
                                           Py_DTSF_ADD_DOT_0, NULL);
        if (repr == NULL)
            return -1;
        int result = put(o, repr, (Py_ssize_t)strlen(repr));
        PyMem_Free(repr);
        return result;
    }
    return 1;
}

static int put_piece(struct out *o, PyObject *piece)
{
    Py_ssize_t n;
    if (ready(piece) < 0)
        return -1;
    if (PyUnicode_IS_ASCII(piece))
        return put(o, PyUnicode_DATA(piece), PyUnicode_GET_LENGTH(piece));
    o->ascii = 0;
    const char *s = PyUnicode_AsUTF8AndSize(piece, &n);
    return s == NULL ? -1 : put(o, s, n);
}

static PyObject *ascii_text(struct out *o)
{
    PyObject *text = PyUnicode_New(o->len, 127);
    if (text != NULL)
        memcpy(PyUnicode_DATA(text), o->data, o->len);
    return text;
}

static int same_key(PyObject *key, PyObject *expected)
{
    return key == expected
           || (PyUnicode_CheckExact(key) && PyUnicode_Compare(key, expected) == 0);
}

static int check_args(PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyTuple_CheckExact(args[1])
        || !PyTuple_CheckExact(args[2]) || !PyTuple_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "fill(dict, keys, types, pieces): tuples");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args[1]);
    if (PyTuple_GET_SIZE(args[2]) != n || PyTuple_GET_SIZE(args[3]) != n + 1) {
        PyErr_SetString(PyExc_ValueError, "fill: n keys, n types and n + 1 pieces");
        return -1;
    }
    for (Py_ssize_t i = 0; i <= n; i++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(args[3], i))
            || (i < n && !PyUnicode_CheckExact(PyTuple_GET_ITEM(args[1], i)))) {
            PyErr_SetString(PyExc_TypeError, "fill: keys and pieces are str");
            return -1;
        }
    return 0;
}

/* fill(struct, keys, types, pieces): the struct's <value> XML, or None. */
static PyObject *fill(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(args, nargs) < 0)
        return NULL;
    PyObject *dict = args[0], *keys = args[1], *types = args[2], *pieces = args[3];
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    if (PyDict_GET_SIZE(dict) != n)
        Py_RETURN_NONE;
    struct out o;
    o.data = o.stack;
    o.len = 0;
    o.cap = STACK_BYTES;
    o.ascii = 1;
    PyObject *key, *value, *result = NULL;
    Py_ssize_t pos = 0;
    int status = 0;
    for (Py_ssize_t i = 0; status == 0 && PyDict_Next(dict, &pos, &key, &value); i++) {
        if (i >= n || !same_key(key, PyTuple_GET_ITEM(keys, i)))
            status = 1;
        else if ((status = put_piece(&o, PyTuple_GET_ITEM(pieces, i))) == 0)
            status = put_value(&o, value, PyTuple_GET_ITEM(types, i));
    }
    if (status == 0)
        status = put_piece(&o, PyTuple_GET_ITEM(pieces, n));
    if (status == 0)
        result = o.ascii ? ascii_text(&o) : PyUnicode_DecodeUTF8(o.data, o.len, "strict");
    else if (status == 1) {
        Py_INCREF(Py_None);
        result = Py_None;
    }
    if (o.data != o.stack)
        PyMem_Free(o.data);
    return result;
}

static PyMethodDef methods[] = {
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL,
     "fill(struct, keys, types, pieces) -> the struct's <value> XML, or None"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_xmlfill",
    "xmlmarshal's structs of a known shape, written in C", -1, methods,
    NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__xmlfill(void)
{
    return PyModule_Create(&module);
}
