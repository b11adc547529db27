/* The fast path's answer: the CGI response of a list or tuple framed as
 * STDOUT records, their end and END_REQUEST in one bytes, sent in one
 * send() (waits as WorkerConnection.flush's), and the scoreboard told. */
#include "fastpath.h"
#include "../common/fcgi_record.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

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
            PyObject *got = PyObject_CallOneArg(s->c.to_bytes, items[i]);
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

/* FCGI_STDOUT records written as one stream of content: ``at`` bytes of it so far */
typedef struct { unsigned char *out; Py_ssize_t at; } Framer;

static void put(Framer *f, const void *data, Py_ssize_t len)
{
    const char *from = data;
    while (len > 0) {
        Py_ssize_t in_record = f->at % FCGI_MAX_CONTENT, room = FCGI_MAX_CONTENT - in_record;
        Py_ssize_t chunk = len < room ? len : room;
        Py_ssize_t record = f->at / FCGI_MAX_CONTENT;
        memcpy(f->out + record * (8 + FCGI_MAX_CONTENT) + 8 + in_record, from, chunk);
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

/* "Content-Length: <n>\r\n" at to (64 bytes); its length (snprintf's
 * format parsing was a tenth of the framing) */
static Py_ssize_t content_length(char *to, Py_ssize_t n)
{
    static const char name[] = "Content-Length: ";
    char digits[24];
    int count = 0;
    do {
        digits[count++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    memcpy(to, name, sizeof name - 1);
    Py_ssize_t at = sizeof name - 1;
    while (count > 0)
        to[at++] = digits[--count];
    to[at++] = '\r';
    to[at++] = '\n';
    return at;
}

/* The CGI answer (gateway.cgi_response) of status, headers and body parts
 * as FCGI_STDOUT records, their end and FCGI_END_REQUEST: one bytes; *cgi its length. */
static PyObject *frame_answer(Answer *a, PyObject *parts, Py_ssize_t body, Py_ssize_t *cgi)
{
    PyObject *headers = a->headers;
    Py_ssize_t nh = PyList_GET_SIZE(headers), len = 8 + PyBytes_GET_SIZE(a->status) + 2 + 2;
    int has_length = 0;
    char extra[64];
    Py_ssize_t extra_len = 0;
    for (Py_ssize_t i = 0; i < nh; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
        len += PyBytes_GET_SIZE(k) + 2 + PyBytes_GET_SIZE(v) + 2;
        has_length = has_length || is_content_length(k);
    }
    if (!has_length)
        extra_len = content_length(extra, body);
    len += extra_len + body;
    Py_ssize_t full = len / FCGI_MAX_CONTENT, rest = len % FCGI_MAX_CONTENT;
    Py_ssize_t total = full * (8 + FCGI_MAX_CONTENT) + (rest ? 8 + ((rest + 7) & ~7) : 0) + 8 + 16;
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
        Py_ssize_t chunk = left < FCGI_MAX_CONTENT ? left : FCGI_MAX_CONTENT;
        int padding = (int)(-chunk & 7);
        fcgi_put_header(at, FCGI_STDOUT, a->rid, chunk, padding);
        memset(at + 8 + chunk, 0, padding);
        at += 8 + chunk + padding;
        left -= chunk;
    }
    fcgi_put_header(at, FCGI_STDOUT, a->rid, 0, 0);
    fcgi_put_header(at + 8, FCGI_END_REQUEST, a->rid, 8, 0);
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

/* Wait until fd has ``events`` (or an error), at most ``seconds``, the
 * GIL released: 1 ready, 0 not in time, -1 a signal handler raised. */
int fp_wait(int fd, short events, double seconds)
{
    double deadline = monotonic() + seconds;
    for (;;) {
        double left = deadline - monotonic();
        if (left <= 0)
            return 0;
        struct pollfd p = {fd, events, 0};
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
        if (!shown && s->c.board != Py_None) {
            PyObject *r = PyObject_CallMethodOneArg(s->c.board, fp_s_set_state, fp_s_finishing);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
            shown = 1;
        }
        int ready = fp_wait(fd, POLLOUT, s->timeout);
        if (ready <= 0)
            return ready;
    }
    return 0;
}

/* The list answer sent and accounted: True, NULL with the error to hand
 * over (the app's answer is not one the fast path sends). */
PyObject *fp_answer_list(Server *s, Answer *a, PyObject *result)
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
    if (rc == 0 && s->c.board != Py_None) {
        /* its connection closes now: uncounted in the same update */
        PyObject *code = PyLong_FromLong(a->code), *sent = PyLong_FromSsize_t(cgi);
        PyObject *args[5] = {s->c.board, code, Py_False, sent, Py_True};
        PyObject *r = code && sent ? PyObject_VectorcallMethod(
            fp_s_request_finished, args, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL) : NULL;
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

