/* The fast path's start_response, write() and wsgi.errors, and the hand
 * over of a request to the Python path (fastpath.adopt) when the app uses
 * more than start_response.  gateway.Answer is the reference. */
#include "fastpath.h"

#include <stddef.h>


/* fastpath.adopt: the Python request with the app running; 0 or -1. */
int fp_hand_over(Answer *a)
{
    if (a->slow != NULL)
        return 0;
    if (a->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the request is over");
        return -1;
    }
    PyObject *slow = PyObject_CallFunction(
        a->server->c.adopt, "iIIOOlO", a->fd, a->rid, a->flags, a->environ,
        a->status ? a->status : Py_None, a->code, a->headers ? a->headers : Py_None);
    if (slow == NULL)
        return -1;
    a->slow = slow;
    a->fd = -1;             /* the Python socket owns it now */
    return 0;
}

/* -- start_response and write ------------------------------------------------- */

static PyObject *body_write(Answer *a, PyObject *data)
{
    if (fp_hand_over(a) < 0)
        return NULL;
    return PyObject_CallMethodOneArg(a->slow, fp_s_write, data);
}

static PyMethodDef body_write_def = {
    "write", (PyCFunction)body_write, METH_O, "write(data): the WSGI write() callable."};

/* latin-1 text (one byte a character) as bytes; NULL without an error if not */
static PyObject *latin1_bytes(PyObject *text)
{
    if (!PyUnicode_Check(text) || PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND)
        return NULL;
    return PyBytes_FromStringAndSize((const char *)PyUnicode_1BYTE_DATA(text),
                                     PyUnicode_GET_LENGTH(text));
}

static int is_digit(Py_UCS1 c) { return c >= '0' && c <= '9'; }

/* gateway.encode_status's result: 0, or -1 with its error */
static int take_status(Answer *a, PyObject *status)
{
    PyObject *bytes = NULL;
    long code = 0;
    if (PyUnicode_Check(status) && PyUnicode_KIND(status) == PyUnicode_1BYTE_KIND
            && PyUnicode_GET_LENGTH(status) >= 3) {
        const Py_UCS1 *c = PyUnicode_1BYTE_DATA(status);
        if (is_digit(c[0]) && is_digit(c[1]) && is_digit(c[2])) {
            bytes = latin1_bytes(status);
            if (bytes == NULL)
                return -1;
            code = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
        }
    }
    if (bytes == NULL) {
        PyObject *got = PyObject_CallOneArg(a->server->c.encode_status, status);
        if (got == NULL)
            return -1;
        code = PyLong_AsLong(PyTuple_GET_ITEM(got, 1));
        if (code == -1 && PyErr_Occurred()) {
            Py_DECREF(got);
            return -1;
        }
        bytes = PyBytes_FromObject(PyTuple_GET_ITEM(got, 0));
        Py_DECREF(got);
        if (bytes == NULL)
            return -1;
    }
    Py_XSETREF(a->status, bytes);
    a->code = code;
    return 0;
}

/* (bytes, bytes) of two latin-1 str, NULL (no error) for anything else */
static PyObject *fast_pair(PyObject *item)
{
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
        return NULL;
    PyObject *k = latin1_bytes(PyTuple_GET_ITEM(item, 0));
    PyObject *v = k ? latin1_bytes(PyTuple_GET_ITEM(item, 1)) : NULL;
    if (v == NULL) {
        Py_XDECREF(k);
        PyErr_Clear();
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, k, v);
    Py_DECREF(k);
    Py_DECREF(v);
    return pair;
}

/* gateway.encode_headers's result, each item (bytes, bytes): 0 or -1 */
static int take_headers(Answer *a, PyObject *headers)
{
    PyObject *out = NULL;
    if (PyList_CheckExact(headers)) {
        Py_ssize_t n = PyList_GET_SIZE(headers);
        out = PyList_New(n);
        for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
            PyObject *pair = fast_pair(PyList_GET_ITEM(headers, i));
            if (pair == NULL)
                Py_CLEAR(out);
            else
                PyList_SET_ITEM(out, i, pair);
        }
        if (out == NULL && PyErr_Occurred())
            return -1;
    }
    if (out == NULL) {
        PyObject *got = PyObject_CallOneArg(a->server->c.encode_headers, headers);
        if (got == NULL)
            return -1;
        Py_ssize_t n = PyList_GET_SIZE(got);
        out = PyList_New(n);
        for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
            PyObject *item = PyList_GET_ITEM(got, i);
            PyObject *k = PyBytes_FromObject(PyTuple_GET_ITEM(item, 0));
            PyObject *v = k ? PyBytes_FromObject(PyTuple_GET_ITEM(item, 1)) : NULL;
            PyObject *pair = v ? PyTuple_Pack(2, k, v) : NULL;
            Py_XDECREF(k);
            Py_XDECREF(v);
            if (pair == NULL)
                Py_CLEAR(out);
            else
                PyList_SET_ITEM(out, i, pair);
        }
        Py_DECREF(got);
        if (out == NULL)
            return -1;
    }
    Py_XSETREF(a->headers, out);
    return 0;
}

static PyObject *respond(Answer *a, PyObject *status, PyObject *headers, PyObject *exc_info);

/* start_response(status, headers, exc_info=None), as gateway.Answer's:
 * its arguments the general way (keywords), then respond() */
static PyObject *Answer_call(Answer *a, PyObject *args, PyObject *kwargs)
{
    if (a->slow != NULL) {
        PyObject *method = PyObject_GetAttr(a->slow, fp_s_start_response);
        PyObject *r = method ? PyObject_Call(method, args, kwargs) : NULL;
        Py_XDECREF(method);
        return r;
    }
    static char *names[] = {"status", "headers", "exc_info", NULL};
    PyObject *status, *headers, *exc_info = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:start_response", names,
                                     &status, &headers, &exc_info))
        return NULL;
    return respond(a, status, headers, exc_info);
}

/* start_response called as apps call it (two or three positional
 * arguments): no tuple made */
PyObject *fp_answer_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames)
{
    Answer *a = (Answer *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (a->slow == NULL && kwnames == NULL && nargs >= 2 && nargs <= 3)
        return respond(a, args[0], args[1], nargs == 3 ? args[2] : Py_None);
    PyObject *tuple = PyTuple_New(nargs), *kwargs = NULL, *r = NULL;
    for (Py_ssize_t i = 0; tuple != NULL && i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(tuple, i, args[i]);
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (tuple != NULL && nkw > 0 && (kwargs = PyDict_New()) != NULL) {
        for (Py_ssize_t i = 0; kwargs != NULL && i < nkw; i++)
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
                Py_CLEAR(kwargs);
    }
    if (tuple != NULL && (nkw == 0 || kwargs != NULL))
        r = Answer_call(a, tuple, kwargs);
    Py_XDECREF(tuple);
    Py_XDECREF(kwargs);
    return r;
}

static PyObject *respond(Answer *a, PyObject *status, PyObject *headers, PyObject *exc_info)
{
    int has_exc = PyObject_IsTrue(exc_info);
    if (has_exc < 0)
        return NULL;
    /* with exc_info before the headers are sent (they are not: sending
     * hands over), the new status replaces the old */
    if (!has_exc && a->status != NULL) {
        PyErr_SetString(PyExc_AssertionError, "start_response() called twice");
        return NULL;
    }
    if (take_status(a, status) < 0 || take_headers(a, headers) < 0)
        return NULL;
    return PyCFunction_New(&body_write_def, (PyObject *)a);
}

static int Answer_traverse(Answer *a, visitproc visit, void *arg)
{
    Py_VISIT(a->server);
    Py_VISIT(a->environ);
    Py_VISIT(a->status);
    Py_VISIT(a->headers);
    Py_VISIT(a->slow);
    return 0;
}

static int Answer_clear(Answer *a)
{
    Py_CLEAR(a->server);
    Py_CLEAR(a->environ);
    Py_CLEAR(a->status);
    Py_CLEAR(a->headers);
    Py_CLEAR(a->slow);
    return 0;
}

static void Answer_dealloc(Answer *a)
{
    PyObject_GC_UnTrack(a);
    Answer_clear(a);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

PyTypeObject fp_AnswerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "supervisor_fcgi_ext.worker._fastpath.start_response",
    .tp_doc = "start_response(status, headers, exc_info=None): one request's.",
    .tp_basicsize = sizeof(Answer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_call = (ternaryfunc)Answer_call,
    .tp_vectorcall_offset = offsetof(Answer, vectorcall),
    .tp_dealloc = (destructor)Answer_dealloc,
    .tp_traverse = (traverseproc)Answer_traverse,
    .tp_clear = (inquiry)Answer_clear,
};

/* -- wsgi.errors ------------------------------------------------------------------ */

static PyObject *errors_stream(Errors *e)
{
    if (fp_hand_over(e->answer) < 0)
        return NULL;
    PyObject *req = PyObject_GetAttr(e->answer->slow, fp_s_req);
    PyObject *stream = req ? PyObject_GetAttr(req, fp_s_stderr) : NULL;
    Py_XDECREF(req);
    return stream;
}

static PyObject *Errors_forward(Errors *e, PyObject *arg, const char *method)
{
    PyObject *stream = errors_stream(e);
    if (stream == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethod(stream, method, "O", arg);
    Py_DECREF(stream);
    return r;
}

static PyObject *Errors_write(Errors *e, PyObject *data)
{
    return Errors_forward(e, data, "write");
}

static PyObject *Errors_writelines(Errors *e, PyObject *lines)
{
    return Errors_forward(e, lines, "writelines");
}

/* nothing written: nothing to flush (flup's buffered stream sends none) */
static PyObject *Errors_flush(Errors *e, PyObject *unused)
{
    if (e->answer->slow == NULL)
        Py_RETURN_NONE;
    PyObject *stream = errors_stream(e);
    if (stream == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethod(stream, "flush", NULL);
    Py_DECREF(stream);
    return r;
}

static PyMethodDef Errors_methods[] = {
    {"write", (PyCFunction)Errors_write, METH_O, "write(text)"},
    {"writelines", (PyCFunction)Errors_writelines, METH_O, "writelines(lines)"},
    {"flush", (PyCFunction)Errors_flush, METH_NOARGS, "flush()"},
    {NULL}
};

static int Errors_traverse(Errors *e, visitproc visit, void *arg)
{
    Py_VISIT(e->answer);
    return 0;
}

static int Errors_clear(Errors *e)
{
    Py_CLEAR(e->answer);
    return 0;
}

static void Errors_dealloc(Errors *e)
{
    PyObject_GC_UnTrack(e);
    Errors_clear(e);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

PyTypeObject fp_ErrorsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "supervisor_fcgi_ext.worker._fastpath.Errors",
    .tp_doc = "wsgi.errors: FastCGI's stderr of one request.",
    .tp_basicsize = sizeof(Errors),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_methods = Errors_methods,
    .tp_dealloc = (destructor)Errors_dealloc,
    .tp_traverse = (traverseproc)Errors_traverse,
    .tp_clear = (inquiry)Errors_clear,
};

