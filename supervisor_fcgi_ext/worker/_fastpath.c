/* fcgi-worker's ordinary request in one C call.
 *
 * With the C codec a hello-world request still ran some 40 Python calls:
 * flup's request and stream objects, the WSGI gateway's closures, the
 * framing and the connection's bookkeeping, about 60 % of its instructions.
 * Server.serve(fd) does all of it for the request nginx sends on a new
 * connection: whole in one recv(), a responder's, without FCGI_KEEP_CONN,
 * its body complete, answered with a list or tuple.  It reads the request,
 * updates the scoreboard (the writer's own C methods), makes the environ
 * (gateway.wsgi_environ and flup's _sanitizeEnv, the same keys and values),
 * calls the app with a C start_response, and sends STDOUT, its end and
 * END_REQUEST in one send().
 *
 * Anything else takes the Python path (worker/fastpath.py): before the app
 * is called serve() answers the bytes it read (the fd stays open) and the
 * Python connection starts from them; once the app runs, an exception, a
 * write() call, wsgi.errors, an iterator or a body that is not bytes hands
 * the request, the app's answer so far and the fd to fastpath.adopt and
 * fastpath.conclude, which finish it as the Python path does.  One set of
 * rules, two speeds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define VERSION 1
#define END_REQUEST 3
#define STDOUT 6
#define RESPONDER 1
#define KEEP_CONN 1
#define MAX_CONTENT 65528
#define RECV_SIZE 65536

typedef struct {
    PyObject_HEAD
    PyObject *parse_request, *app, *base, *board, *adopt, *conclude;
    PyObject *encode_status, *encode_headers, *to_bytes, *bytesio;
    Py_ssize_t limit;
    double timeout;
    int tcp;
    unsigned long long served;      /* requests answered here: the tests' witness */
    char *buf;                      /* RECV_SIZE; used with the GIL held */
} Server;

/* One request's start_response (its tp_call), the state of the answer, and
 * what hands the request over to Python when the app does more. */
typedef struct {
    PyObject_HEAD
    Server *server;
    PyObject *environ;      /* while the request runs */
    PyObject *status;       /* bytes, once start_response was called */
    PyObject *headers;      /* a list of (bytes, bytes) */
    PyObject *slow;         /* gateway.Answer once handed over */
    long code;
    int fd;                 /* -1 once handed over or answered */
    unsigned rid, flags;
} Answer;

/* wsgi.errors: writing to it hands the request over (FastCGI's stderr). */
typedef struct {
    PyObject_HEAD
    Answer *answer;
} Errors;

static PyTypeObject AnswerType, ErrorsType;
static PyObject *s_request_started, *s_request_finished, *s_set_state, *s_finishing;
static PyObject *s_script, *s_path, *s_query, *s_uri, *s_https, *s_scheme, *s_input;
static PyObject *s_errors, *s_empty, *s_slash, *s_on, *s_one, *s_https_value;
static PyObject *s_http_ct, *s_http_cl, *s_req, *s_stderr, *s_write, *s_start_response;
static PyObject *required[4];       /* the params _sanitizeEnv warns about when missing */

/* -- handing over ------------------------------------------------------------ */

/* fastpath.adopt: the Python request with the app running; 0 or -1. */
static int hand_over(Answer *a)
{
    if (a->slow != NULL)
        return 0;
    if (a->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the request is over");
        return -1;
    }
    PyObject *slow = PyObject_CallFunction(
        a->server->adopt, "iIIOOlO", a->fd, a->rid, a->flags, a->environ,
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
    if (hand_over(a) < 0)
        return NULL;
    return PyObject_CallMethodOneArg(a->slow, s_write, data);
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
        PyObject *got = PyObject_CallOneArg(a->server->encode_status, status);
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
        PyObject *got = PyObject_CallOneArg(a->server->encode_headers, headers);
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

/* start_response(status, headers, exc_info=None), as gateway.Answer's */
static PyObject *Answer_call(Answer *a, PyObject *args, PyObject *kwargs)
{
    if (a->slow != NULL) {
        PyObject *method = PyObject_GetAttr(a->slow, s_start_response);
        PyObject *r = method ? PyObject_Call(method, args, kwargs) : NULL;
        Py_XDECREF(method);
        return r;
    }
    static char *names[] = {"status", "headers", "exc_info", NULL};
    PyObject *status, *headers, *exc_info = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:start_response", names,
                                     &status, &headers, &exc_info))
        return NULL;
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

static PyTypeObject AnswerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "supervisor_fcgi_ext.worker._fastpath.start_response",
    .tp_doc = "start_response(status, headers, exc_info=None): one request's.",
    .tp_basicsize = sizeof(Answer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_call = (ternaryfunc)Answer_call,
    .tp_dealloc = (destructor)Answer_dealloc,
    .tp_traverse = (traverseproc)Answer_traverse,
    .tp_clear = (inquiry)Answer_clear,
};

/* -- wsgi.errors ------------------------------------------------------------------ */

static PyObject *errors_stream(Errors *e)
{
    if (hand_over(e->answer) < 0)
        return NULL;
    PyObject *req = PyObject_GetAttr(e->answer->slow, s_req);
    PyObject *stream = req ? PyObject_GetAttr(req, s_stderr) : NULL;
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

static PyTypeObject ErrorsType = {
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

/* -- the environ ---------------------------------------------------------------------- */

static PyObject *get(PyObject *dict, PyObject *key)     /* borrowed; NULL if absent */
{
    PyObject *v = PyDict_GetItemWithError(dict, key);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

static int is_text(PyObject *v) { return v != NULL && PyUnicode_CheckExact(v); }

/* What gateway.wsgi_environ and flup's _sanitizeEnv would change, worked
 * out before anything is: the new SCRIPT_NAME / PATH_INFO of the lone-slash
 * rule (*script, *rule_path), sanitize's PATH_INFO and QUERY_STRING (new
 * references or NULL).  1 when the fast path may take the request, 0 when
 * sanitize would warn in wsgi.errors (a missing param, a SCRIPT_NAME that
 * does not match REQUEST_URI), -1 on errors. */
typedef struct { PyObject *script, *rule_path, *path, *query; } Plan;

static void plan_clear(Plan *p)
{
    Py_CLEAR(p->script);
    Py_CLEAR(p->rule_path);
    Py_CLEAR(p->path);
    Py_CLEAR(p->query);
}

static int plan_environ(PyObject *params, Plan *p)
{
    memset(p, 0, sizeof *p);
    PyObject *script = get(params, s_script), *path = get(params, s_path);
    PyObject *uri = get(params, s_uri), *query = get(params, s_query);
    if ((script && !is_text(script)) || (path && !is_text(path)) || (uri && !is_text(uri))
            || (query && !is_text(query)))
        return 0;
    for (int i = 0; i < 4; i++)
        if (get(params, required[i]) == NULL)
            return 0;
    if (script != NULL && PyUnicode_GET_LENGTH(script) == 1
            && PyUnicode_READ_CHAR(script, 0) == '/') {
        /* SCRIPT_NAME '' and PATH_INFO '/' + PATH_INFO.lstrip('/') */
        Py_ssize_t len = path ? PyUnicode_GET_LENGTH(path) : 0, at = 0;
        while (at < len && PyUnicode_READ_CHAR(path, at) == '/')
            at++;
        PyObject *rest = path ? PyUnicode_Substring(path, at, len) : (Py_INCREF(s_empty), s_empty);
        p->rule_path = rest ? PyUnicode_Concat(s_slash, rest) : NULL;
        Py_XDECREF(rest);
        if (p->rule_path == NULL)
            return -1;
        Py_INCREF(s_empty);
        p->script = s_empty;
        script = s_empty;
        path = p->rule_path;
    }
    if (script == NULL) {
        Py_INCREF(s_empty);
        p->script = s_empty;
        script = s_empty;
    }
    Py_ssize_t mark = -1, ulen = 0;
    if (uri != NULL) {
        ulen = PyUnicode_GET_LENGTH(uri);
        mark = PyUnicode_FindChar(uri, '?', 0, ulen, 1);
        if (mark == -2)
            return -1;
    }
    if (path == NULL || PyUnicode_GET_LENGTH(path) == 0) {
        if (uri != NULL) {
            Py_ssize_t end = mark < 0 ? ulen : mark;
            PyObject *head = PyUnicode_Substring(uri, 0, end);
            if (head == NULL)
                return -1;
            int starts = PyUnicode_Tailmatch(head, script, 0, end, -1);
            if (starts < 1) {
                Py_DECREF(head);
                return starts < 0 ? -1 : 0;
            }
            p->path = PyUnicode_Substring(head, PyUnicode_GET_LENGTH(script), end);
            Py_DECREF(head);
            if (p->path == NULL)
                return -1;
        } else {
            Py_INCREF(s_empty);
            p->path = s_empty;
        }
    }
    if (query == NULL || PyUnicode_GET_LENGTH(query) == 0) {
        p->query = mark >= 0 ? PyUnicode_Substring(uri, mark + 1, ulen) : (Py_INCREF(s_empty), s_empty);
        if (p->query == NULL)
            return -1;
    }
    return 1;
}

/* params into the environ, as planned; 0 or -1 */
static int make_environ(Server *s, PyObject *env, Plan *p, PyObject *body, Answer *a)
{
    if (PyDict_Update(env, s->base) < 0)
        return -1;
    PyObject *drop[2] = {s_http_ct, s_http_cl};
    for (int i = 0; i < 2; i++)
        if (get(env, drop[i]) != NULL && PyDict_DelItem(env, drop[i]) < 0)
            return -1;
    if (p->rule_path != NULL && (PyDict_SetItem(env, s_script, p->script) < 0
                                 || PyDict_SetItem(env, s_path, p->rule_path) < 0))
        return -1;
    PyObject *https = get(env, s_https);
    if (https != NULL && is_text(https)
            && (PyUnicode_Compare(https, s_on) == 0 || PyUnicode_Compare(https, s_one) == 0)
            && PyDict_SetItem(env, s_scheme, s_https_value) < 0)
        return -1;
    PyObject *input = PyObject_CallOneArg(s->bytesio, body);
    if (input == NULL || PyDict_SetItem(env, s_input, input) < 0) {
        Py_XDECREF(input);
        return -1;
    }
    Py_DECREF(input);
    Errors *errors = PyObject_GC_New(Errors, &ErrorsType);
    if (errors == NULL)
        return -1;
    Py_INCREF(a);
    errors->answer = a;
    PyObject_GC_Track(errors);
    int rc = PyDict_SetItem(env, s_errors, (PyObject *)errors);
    Py_DECREF(errors);
    if (rc < 0)
        return -1;
    if (p->rule_path == NULL && p->script != NULL && PyDict_SetItem(env, s_script, p->script) < 0)
        return -1;
    if (p->path != NULL && PyDict_SetItem(env, s_path, p->path) < 0)
        return -1;
    if (p->query != NULL && PyDict_SetItem(env, s_query, p->query) < 0)
        return -1;
    return 0;
}

/* -- the answer --------------------------------------------------------------------- */

static void put_header(unsigned char *at, int kind, unsigned rid, Py_ssize_t length,
                       int padding)
{
    at[0] = VERSION;
    at[1] = (unsigned char)kind;
    at[2] = (unsigned char)(rid >> 8);
    at[3] = (unsigned char)rid;
    at[4] = (unsigned char)(length >> 8);
    at[5] = (unsigned char)length;
    at[6] = (unsigned char)padding;
    at[7] = 0;
}

/* The result's items as bytes (to_bytes for the others), in a new list;
 * NULL with the error to_bytes raised. */
static PyObject *body_parts(Server *s, PyObject *result, Py_ssize_t *size)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(result);
    PyObject **items = PySequence_Fast_ITEMS(result);
    PyObject *parts = PyList_New(n);
    *size = 0;
    for (Py_ssize_t i = 0; parts != NULL && i < n; i++) {
        PyObject *part;
        if (PyBytes_Check(items[i])) {
            Py_INCREF(items[i]);
            part = items[i];
        } else {
            PyObject *got = PyObject_CallOneArg(s->to_bytes, items[i]);
            part = got ? PyBytes_FromObject(got) : NULL;
            Py_XDECREF(got);
        }
        if (part == NULL) {
            Py_CLEAR(parts);
            break;
        }
        *size += PyBytes_GET_SIZE(part);
        PyList_SET_ITEM(parts, i, part);
    }
    return parts;
}

/* STDOUT records written as one stream of content: ``at`` bytes of it so far */
typedef struct { unsigned char *out; Py_ssize_t at; } Framer;

static void put(Framer *f, const void *data, Py_ssize_t len)
{
    const char *from = data;
    while (len > 0) {
        Py_ssize_t in_record = f->at % MAX_CONTENT, room = MAX_CONTENT - in_record;
        Py_ssize_t chunk = len < room ? len : room;
        memcpy(f->out + (f->at / MAX_CONTENT) * (8 + MAX_CONTENT) + 8 + in_record, from, chunk);
        f->at += chunk;
        from += chunk;
        len -= chunk;
    }
}

static void put_bytes(Framer *f, PyObject *b)
{
    put(f, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
}

static int is_content_length(PyObject *name)
{
    static const char want[] = "content-length";
    if (PyBytes_GET_SIZE(name) != 14)
        return 0;
    const char *c = PyBytes_AS_STRING(name);
    for (int i = 0; i < 14; i++)
        if ((c[i] >= 'A' && c[i] <= 'Z' ? c[i] + 32 : c[i]) != want[i])
            return 0;
    return 1;
}

/* The CGI answer (gateway.cgi_response) of status, headers and body parts
 * as STDOUT records, their end and END_REQUEST: one bytes; *cgi its length. */
static PyObject *frame_answer(Answer *a, PyObject *parts, Py_ssize_t body, Py_ssize_t *cgi)
{
    PyObject *headers = a->headers;
    Py_ssize_t nh = PyList_GET_SIZE(headers), len = 8 + PyBytes_GET_SIZE(a->status) + 2 + 2;
    int has_length = 0;
    char extra[64] = "";
    for (Py_ssize_t i = 0; i < nh; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
        len += PyBytes_GET_SIZE(k) + 2 + PyBytes_GET_SIZE(v) + 2;
        has_length = has_length || is_content_length(k);
    }
    if (!has_length)
        snprintf(extra, sizeof extra, "Content-Length: %zd\r\n", body);
    Py_ssize_t extra_len = (Py_ssize_t)strlen(extra);
    len += extra_len + body;
    Py_ssize_t full = len / MAX_CONTENT, rest = len % MAX_CONTENT;
    Py_ssize_t total = full * (8 + MAX_CONTENT) + (rest ? 8 + ((rest + 7) & ~7) : 0) + 8 + 16;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    Framer f = {(unsigned char *)PyBytes_AS_STRING(out), 0};
    put(&f, "Status: ", 8);
    put_bytes(&f, a->status);
    put(&f, "\r\n", 2);
    for (Py_ssize_t i = 0; i < nh; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        put_bytes(&f, PyTuple_GET_ITEM(pair, 0));
        put(&f, ": ", 2);
        put_bytes(&f, PyTuple_GET_ITEM(pair, 1));
        put(&f, "\r\n", 2);
    }
    put(&f, extra, extra_len);
    put(&f, "\r\n", 2);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++)
        put_bytes(&f, PyList_GET_ITEM(parts, i));
    unsigned char *at = f.out;
    for (Py_ssize_t left = len; left > 0;) {
        Py_ssize_t chunk = left < MAX_CONTENT ? left : MAX_CONTENT;
        int padding = (int)(-chunk & 7);
        put_header(at, STDOUT, a->rid, chunk, padding);
        memset(at + 8 + chunk, 0, padding);
        at += 8 + chunk + padding;
        left -= chunk;
    }
    put_header(at, STDOUT, a->rid, 0, 0);
    put_header(at + 8, END_REQUEST, a->rid, 8, 0);
    memset(at + 16, 0, 8);      /* app status 0, FCGI_REQUEST_COMPLETE */
    *cgi = len;
    return out;
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait for room to send, at most the timeout (the GIL released): 1 ready,
 * 0 the peer took nothing in time, -1 a signal handler raised. */
static int wait_writable(Server *s, int fd)
{
    double deadline = monotonic() + s->timeout;
    for (;;) {
        double left = deadline - monotonic();
        if (left <= 0)
            return 0;
        struct pollfd p = {fd, POLLOUT, 0};
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = poll(&p, 1, (int)(left * 1000) + 1);
        Py_END_ALLOW_THREADS
        if (n > 0)
            return 1;
        if (n < 0 && errno == EINTR && PyErr_CheckSignals() < 0)
            return -1;
    }
}

/* Send all of data as WorkerConnection.flush does: waiting for room
 * shows 'finishing'; a peer gone or stuck is lost (nobody to answer).
 * 0, or -1 when a signal handler raised. */
static int send_all(Server *s, int fd, PyObject *data)
{
    const char *p = PyBytes_AS_STRING(data);
    Py_ssize_t left = PyBytes_GET_SIZE(data);
    int shown = 0;
    while (left > 0) {
        ssize_t n = send(fd, p, left, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) {
            p += n;
            left -= n;
            continue;
        }
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return 0;
        if (!shown && s->board != Py_None) {
            PyObject *r = PyObject_CallMethodOneArg(s->board, s_set_state, s_finishing);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
            shown = 1;
        }
        int ready = wait_writable(s, fd);
        if (ready <= 0)
            return ready;
    }
    return 0;
}

/* The list answer sent and accounted: True, NULL with the error to hand
 * over (the app's answer is not one the fast path sends). */
static PyObject *answer_list(Server *s, Answer *a, PyObject *result)
{
    Py_ssize_t body, cgi;
    PyObject *parts = body_parts(s, result, &body);
    if (parts == NULL)
        return NULL;
    if (a->status == NULL) {
        Py_DECREF(parts);
        PyErr_SetString(PyExc_AssertionError, "app returned before start_response()");
        return NULL;
    }
    PyObject *out = frame_answer(a, parts, body, &cgi);
    Py_DECREF(parts);
    if (out == NULL)
        return NULL;
    int fd = a->fd;
    a->fd = -1;
    int rc = send_all(s, fd, out);
    Py_DECREF(out);
    if (rc == 0 && s->board != Py_None) {
        /* its connection closes now: uncounted in the same update */
        PyObject *code = PyLong_FromLong(a->code), *sent = PyLong_FromSsize_t(cgi);
        PyObject *args[5] = {s->board, code, Py_False, sent, Py_True};
        PyObject *r = code && sent ? PyObject_VectorcallMethod(
            s_request_finished, args, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL) : NULL;
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
        Py_XDECREF(code);
        Py_XDECREF(sent);
    }
    close(fd);
    if (rc < 0)
        return NULL;
    s->served++;
    Py_RETURN_TRUE;
}

/* -- serve ------------------------------------------------------------------------- */

/* The request in got (parse_request's tuple) if it is the ordinary one,
 * with its body: 1, else 0 (-1 on errors). */
static int ordinary(PyObject *got, Py_ssize_t n, PyObject **body)
{
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(got, 0));
    long role = PyLong_AsLong(PyTuple_GET_ITEM(got, 2));
    long flags = PyLong_AsLong(PyTuple_GET_ITEM(got, 3));
    PyObject *stdin_list = PyTuple_GET_ITEM(got, 6);
    Py_ssize_t chunks = PyList_GET_SIZE(stdin_list);
    if (PyErr_Occurred())
        return -1;
    if (end != n || role != RESPONDER || (flags & KEEP_CONN) || chunks == 0
            || PyBytes_GET_SIZE(PyList_GET_ITEM(stdin_list, chunks - 1)) != 0)
        return 0;
    if (chunks == 2) {
        *body = PyList_GET_ITEM(stdin_list, 0);
        Py_INCREF(*body);
    } else {
        PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
        *body = empty ? PyObject_CallMethod(empty, "join", "O", stdin_list) : NULL;
        Py_XDECREF(empty);
    }
    return *body == NULL ? -1 : 1;
}

/* After the app's call (result, or NULL with its exception): the answer
 * sent here, or the request handed over to fastpath.conclude. */
static PyObject *after_app(Server *s, Answer *a, PyObject *result)
{
    if (result != NULL && a->slow == NULL
            && (PyList_CheckExact(result) || PyTuple_CheckExact(result))) {
        PyObject *done = answer_list(s, a, result);
        if (done != NULL || a->fd < 0) {    /* sent, or failed after sending */
            Py_DECREF(result);
            return done;
        }
        Py_CLEAR(result);       /* its error: handed over as the app's */
    }
    PyObject *exc = NULL;
    if (result == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL;        /* SystemExit and the like stop the worker */
        PyObject *type, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL)
            PyException_SetTraceback(exc, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
    }
    PyObject *done = NULL;
    if (hand_over(a) == 0)
        done = PyObject_CallFunctionObjArgs(s->conclude, a->slow, result ? result : Py_None,
                                            exc ? exc : Py_None, NULL);
    Py_XDECREF(result);
    Py_XDECREF(exc);
    return done;
}

/* The request, once taken: the scoreboard, the environ, the app, the answer. */
static PyObject *run(Server *s, int fd, PyObject *got, PyObject *body, Plan *plan)
{
    PyObject *params = PyTuple_GET_ITEM(got, 4);
    Answer *a = PyObject_GC_New(Answer, &AnswerType);
    if (a == NULL)
        return NULL;
    Py_INCREF(s);
    a->server = s;
    a->fd = fd;
    a->rid = (unsigned)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(got, 1));
    a->flags = (unsigned)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(got, 3));
    a->status = a->headers = a->slow = NULL;
    a->code = 0;
    Py_INCREF(params);
    a->environ = params;
    PyObject_GC_Track(a);
    PyObject *done = NULL;
    if (s->board != Py_None) {
        /* counted as accepted in the same update: it needed no wait */
        PyObject *args[3] = {s->board, params, Py_True};
        PyObject *r = PyObject_VectorcallMethod(s_request_started, args,
                                                3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (r == NULL)
            goto out;
        Py_DECREF(r);
    }
    if (make_environ(s, params, plan, body, a) < 0)
        goto out;
    PyObject *args[2] = {params, (PyObject *)a};
    done = after_app(s, a, PyObject_Vectorcall(s->app, args, 2, NULL));
out:
    if (a->fd >= 0) {           /* an error before the answer: nobody to answer */
        close(a->fd);
        a->fd = -1;
    }
    Py_CLEAR(a->environ);       /* environ -> wsgi.errors -> a: no cycle left */
    Py_CLEAR(a->slow);
    Py_DECREF(a);
    return done;
}

PyDoc_STRVAR(serve_doc,
"serve(fd)\n--\n\n"
"Serve the connection just accepted as fd if it brings the ordinary request:\n"
"True once answered (fd closed), None once handed over and finished by\n"
"fastpath.conclude (likewise); else the bytes read from it (b'' for none\n"
"yet, or at its end), or the OSError recv() failed with, the fd left open\n"
"for the Python path.  Exceptions (the app's SystemExit...) close the fd.");

static PyObject *Server_serve(Server *s, PyObject *arg)
{
    int fd = (int)PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (s->tcp) {
        /* a streamed answer leaves in several sends: no Nagle delay */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    ssize_t n;
    while ((n = recv(fd, s->buf, RECV_SIZE, MSG_DONTWAIT)) < 0 && errno == EINTR) {
        if (PyErr_CheckSignals() < 0) {
            close(fd);
            return NULL;
        }
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyBytes_FromStringAndSize(NULL, 0);
        PyObject *type, *value, *tb;
        PyErr_SetFromErrno(PyExc_OSError);
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        return value;
    }
    PyObject *data = PyBytes_FromStringAndSize(s->buf, n);
    if (data == NULL || n == 0)
        return data;
    PyObject *args[3] = {data, NULL, NULL};
    PyObject *got = NULL, *body = NULL, *done = NULL;
    Plan plan = {0};
    if (!(args[1] = PyLong_FromLong(0)) || !(args[2] = PyLong_FromSsize_t(s->limit)))
        goto error;
    got = PyObject_Vectorcall(s->parse_request, args, 3, NULL);
    if (got == NULL)
        goto error;
    int rc = got == Py_None ? 0 : ordinary(got, n, &body);
    if (rc > 0)
        rc = plan_environ(PyTuple_GET_ITEM(got, 4), &plan);
    if (rc < 0)
        goto error;
    if (rc == 0) {
        done = data;            /* not ordinary: the Python path reads these */
        data = NULL;
        goto out;
    }
    done = run(s, fd, got, body, &plan);
    goto out;
error:
    close(fd);
out:
    plan_clear(&plan);
    Py_XDECREF(args[1]);
    Py_XDECREF(args[2]);
    Py_XDECREF(data);
    Py_XDECREF(got);
    Py_XDECREF(body);
    return done;
}

static PyMethodDef Server_methods[] = {
    {"serve", (PyCFunction)Server_serve, METH_O, serve_doc},
    {NULL}
};

static PyMemberDef Server_members[] = {
    {"served", T_ULONGLONG, offsetof(Server, served), READONLY,
     "requests answered by the fast path"},
    {NULL}
};

static int Server_init(Server *s, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"parse_request", "app", "base", "board", "adopt", "conclude",
                            "encode_status", "encode_headers", "to_bytes", "bytesio",
                            "limit", "timeout", "tcp", NULL};
    PyObject *o[10];
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!OOOOOOOndp:Server", names,
                                     &o[0], &o[1], &PyDict_Type, &o[2], &o[3], &o[4], &o[5],
                                     &o[6], &o[7], &o[8], &o[9], &s->limit, &s->timeout,
                                     &s->tcp))
        return -1;
    PyObject **slots[10] = {&s->parse_request, &s->app, &s->base, &s->board, &s->adopt,
                            &s->conclude, &s->encode_status, &s->encode_headers,
                            &s->to_bytes, &s->bytesio};
    for (int i = 0; i < 10; i++) {
        Py_INCREF(o[i]);
        Py_XSETREF(*slots[i], o[i]);
    }
    if (s->buf == NULL && (s->buf = PyMem_Malloc(RECV_SIZE)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int Server_traverse(Server *s, visitproc visit, void *arg)
{
    Py_VISIT(s->parse_request);
    Py_VISIT(s->app);
    Py_VISIT(s->base);
    Py_VISIT(s->board);
    Py_VISIT(s->adopt);
    Py_VISIT(s->conclude);
    Py_VISIT(s->encode_status);
    Py_VISIT(s->encode_headers);
    Py_VISIT(s->to_bytes);
    Py_VISIT(s->bytesio);
    return 0;
}

static int Server_clear(Server *s)
{
    Py_CLEAR(s->parse_request);
    Py_CLEAR(s->app);
    Py_CLEAR(s->base);
    Py_CLEAR(s->board);
    Py_CLEAR(s->adopt);
    Py_CLEAR(s->conclude);
    Py_CLEAR(s->encode_status);
    Py_CLEAR(s->encode_headers);
    Py_CLEAR(s->to_bytes);
    Py_CLEAR(s->bytesio);
    return 0;
}

static void Server_dealloc(Server *s)
{
    PyObject_GC_UnTrack(s);
    Server_clear(s);
    PyMem_Free(s->buf);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyTypeObject ServerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "supervisor_fcgi_ext.worker._fastpath.Server",
    .tp_doc = "Server(parse_request, app, base, board, adopt, conclude, encode_status,\n"
              "encode_headers, to_bytes, bytesio, limit, timeout, tcp): fastpath.py makes it.",
    .tp_basicsize = sizeof(Server),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Server_init,
    .tp_dealloc = (destructor)Server_dealloc,
    .tp_traverse = (traverseproc)Server_traverse,
    .tp_clear = (inquiry)Server_clear,
    .tp_methods = Server_methods,
    .tp_members = Server_members,
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "supervisor_fcgi_ext.worker._fastpath",
    "fcgi-worker's ordinary request in one C call (see worker/fastpath.py).", -1, NULL,
};

static int intern(PyObject **to, const char *text)
{
    *to = PyUnicode_InternFromString(text);
    return *to == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__fastpath(void)
{
    static const char *req_names[4] = {"REQUEST_METHOD", "SERVER_NAME", "SERVER_PORT",
                                       "SERVER_PROTOCOL"};
    if (PyType_Ready(&ServerType) < 0 || PyType_Ready(&AnswerType) < 0
            || PyType_Ready(&ErrorsType) < 0)
        return NULL;
    if (intern(&s_request_started, "request_started") < 0
            || intern(&s_request_finished, "request_finished") < 0
            || intern(&s_set_state, "set_state") < 0 || intern(&s_finishing, "finishing") < 0
            || intern(&s_script, "SCRIPT_NAME") < 0 || intern(&s_path, "PATH_INFO") < 0
            || intern(&s_query, "QUERY_STRING") < 0 || intern(&s_uri, "REQUEST_URI") < 0
            || intern(&s_https, "HTTPS") < 0 || intern(&s_scheme, "wsgi.url_scheme") < 0
            || intern(&s_input, "wsgi.input") < 0 || intern(&s_errors, "wsgi.errors") < 0
            || intern(&s_empty, "") < 0 || intern(&s_slash, "/") < 0
            || intern(&s_on, "on") < 0 || intern(&s_one, "1") < 0
            || intern(&s_https_value, "https") < 0
            || intern(&s_http_ct, "HTTP_CONTENT_TYPE") < 0
            || intern(&s_http_cl, "HTTP_CONTENT_LENGTH") < 0
            || intern(&s_req, "req") < 0 || intern(&s_stderr, "stderr") < 0
            || intern(&s_write, "write") < 0 || intern(&s_start_response, "start_response") < 0)
        return NULL;
    for (int i = 0; i < 4; i++)
        if (intern(&required[i], req_names[i]) < 0)
            return NULL;
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&ServerType);
    if (PyModule_AddObject(module, "Server", (PyObject *)&ServerType) < 0) {
        Py_DECREF(&ServerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
