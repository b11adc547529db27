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
 * END_REQUEST in one send().  A single-threaded worker's accept loop is
 * here too (accept_loop), so its Python runs for the app alone.
 *
 * Anything else takes the Python path (worker/fastpath.py): before the app
 * is called serve() answers the bytes it read (the fd stays open) and the
 * Python connection starts from them; once the app runs, an exception, a
 * write() call, wsgi.errors, an iterator or a body that is not bytes hands
 * the request, the app's answer so far and the fd to fastpath.adopt and
 * fastpath.conclude, which finish it as the Python path does.  One set of
 * rules, two speeds.
 *
 * Here: the Server type, serve(), accept_loop() and the module.  fastpath_environ.c makes
 * the environ, fastpath_answer.c is start_response, write() and
 * wsgi.errors (and the hand over), fastpath_send.c frames and sends.
 */
#include "fastpath.h"
#include <structmember.h>

#include <errno.h>
#include <poll.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

PyObject *fp_s_request_started, *fp_s_request_finished, *fp_s_set_state;
PyObject *fp_s_finishing, *fp_s_script, *fp_s_path, *fp_s_query, *fp_s_uri;
PyObject *fp_s_https, *fp_s_scheme, *fp_s_input, *fp_s_errors, *fp_s_empty;
PyObject *fp_s_slash, *fp_s_on, *fp_s_one, *fp_s_https_value, *fp_s_http_ct;
PyObject *fp_s_http_cl, *fp_s_req, *fp_s_stderr, *fp_s_write, *fp_s_start_response;
PyObject *fp_required[4];
static PyObject *fp_s_stopping, *fp_s_max_requests, *fp_s_request_done;

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
        PyObject *done = fp_answer_list(s, a, result);
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
    if (fp_hand_over(a) == 0)
        done = PyObject_CallFunctionObjArgs(s->c.conclude, a->slow, result ? result : Py_None,
                                            exc ? exc : Py_None, NULL);
    Py_XDECREF(result);
    Py_XDECREF(exc);
    return done;
}

/* The request, once taken: the scoreboard, the environ, the app, the answer. */
static PyObject *run(Server *s, int fd, PyObject *got, PyObject *body, Plan *plan)
{
    PyObject *params = PyTuple_GET_ITEM(got, 4);
    Answer *a = PyObject_GC_New(Answer, &fp_AnswerType);
    if (a == NULL)
        return NULL;
    Py_INCREF(s);
    a->server = s;
    a->fd = fd;
    a->rid = (unsigned)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(got, 1));
    a->flags = (unsigned)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(got, 3));
    a->status = a->headers = a->slow = NULL;
    a->code = 0;
    a->vectorcall = fp_answer_vectorcall;
    Py_INCREF(params);
    a->environ = params;
    PyObject_GC_Track(a);
    PyObject *done = NULL;
    if (s->c.board != Py_None) {
        /* counted as accepted in the same update: it needed no wait */
        PyObject *args[3] = {s->c.board, params, Py_True};
        PyObject *r = PyObject_VectorcallMethod(fp_s_request_started, args,
                                                3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (r == NULL)
            goto out;
        Py_DECREF(r);
    }
    if (fp_make_environ(s, params, plan, body, a) < 0)
        goto out;
    PyObject *args[2] = {params, (PyObject *)a};
    done = after_app(s, a, PyObject_Vectorcall(s->c.app, args, 2, NULL));
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

static PyObject *serve(Server *s, int fd);

static PyObject *Server_serve(Server *s, PyObject *arg)
{
    int fd = (int)PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    return serve(s, fd);
}

/* The OSError of errno, as a value (not raised) */
static PyObject *os_error(void)
{
    PyObject *type, *value, *tb;
    PyErr_SetFromErrno(PyExc_OSError);
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

PyDoc_STRVAR(accept_loop_doc,
"accept_loop(listener_fd, worker)\n--\n\n"
"base.py's accept loop for a single-threaded worker: accept on listener_fd\n"
"and serve() each connection until worker.stopping (then None), a\n"
"connection for the Python path ((fd, what serve() read)) or a failed\n"
"accept() (its OSError, as a value).  worker.request_done() follows each\n"
"request served here when worker.max_requests is set.  Signal handlers run\n"
"before each accept() and when one interrupts it, as in socket.accept().");

/* Whether object.name is true; -1 on errors */
static int attribute_true(PyObject *object, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(object, name);
    int truth = value == NULL ? -1 : PyObject_IsTrue(value);
    Py_XDECREF(value);
    return truth;
}

static PyObject *Server_accept_loop(Server *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "accept_loop(listener_fd, worker)");
        return NULL;
    }
    int listener = (int)PyLong_AsLong(args[0]);
    PyObject *worker = args[1];
    if (listener == -1 && PyErr_Occurred())
        return NULL;
    int counted = attribute_true(worker, fp_s_max_requests);
    if (counted < 0)
        return NULL;
    for (;;) {
        if (PyErr_CheckSignals() < 0)
            return NULL;
        int stop = attribute_true(worker, fp_s_stopping);
        if (stop < 0)
            return NULL;
        if (stop)
            Py_RETURN_NONE;
        int fd;
        Py_BEGIN_ALLOW_THREADS
        fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        Py_END_ALLOW_THREADS
        if (fd < 0) {
            if (errno == EINTR)
                continue;           /* the handlers run at the top */
            return os_error();
        }
        PyObject *got = serve(s, fd);
        if (got == Py_True && counted) {
            Py_DECREF(got);
            got = PyObject_CallMethodNoArgs(worker, fp_s_request_done);
            if (got != NULL)
                Py_SETREF(got, Py_NewRef(Py_None));
        }
        if (got == NULL)
            return NULL;
        if (got != Py_True && got != Py_None) {
            PyObject *pair = Py_BuildValue("(iN)", fd, got);
            return pair;
        }
        Py_DECREF(got);
    }
}

static PyObject *serve(Server *s, int fd)
{
    if (s->tcp) {
        /* a streamed answer leaves in several sends: no Nagle delay */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    ssize_t n;
    int waited = 0;
    for (;;) {
        n = recv(fd, s->buf, RECV_SIZE, MSG_DONTWAIT);
        if (n >= 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
            break;
        int ready = 1;
        if (errno == EINTR)
            ready = PyErr_CheckSignals() < 0 ? -1 : 1;
        else if (waited++ == 0)
            ready = fp_wait(fd, POLLIN, s->timeout < FIRST_READ_GRACE ? s->timeout
                                                                      : FIRST_READ_GRACE);
        else
            ready = 0;
        if (ready < 0) {
            close(fd);
            return NULL;
        }
        if (ready == 0)
            return PyBytes_FromStringAndSize(NULL, 0);
    }
    if (n < 0) {
        return os_error();
    }
    PyObject *data = PyBytes_FromStringAndSize(s->buf, n);
    if (data == NULL || n == 0)
        return data;
    PyObject *args[3] = {data, NULL, NULL};
    PyObject *got = NULL, *body = NULL, *done = NULL;
    Plan plan = {0};
    if (!(args[1] = PyLong_FromLong(0)) || !(args[2] = PyLong_FromSsize_t(s->limit)))
        goto error;
    got = PyObject_Vectorcall(s->c.parse_request, args, 3, NULL);
    if (got == NULL)
        goto error;
    int rc = got == Py_None ? 0 : ordinary(got, n, &body);
    if (rc > 0)
        rc = fp_plan_environ(PyTuple_GET_ITEM(got, 4), &plan);
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
    fp_plan_clear(&plan);
    Py_XDECREF(args[1]);
    Py_XDECREF(args[2]);
    Py_XDECREF(data);
    Py_XDECREF(got);
    Py_XDECREF(body);
    return done;
}

static PyMethodDef Server_methods[] = {
    {"serve", (PyCFunction)Server_serve, METH_O, serve_doc},
    {"accept_loop", (PyCFunction)(void (*)(void))Server_accept_loop, METH_FASTCALL,
     accept_loop_doc},
    {NULL}
};

static PyMemberDef Server_members[] = {
    {"served", T_ULONGLONG, offsetof(Server, served), READONLY,
     "requests answered by the fast path"},
    {NULL}
};

/* Calls as the array of N_CALLS references it is */
static PyObject **calls(Server *s) { return (PyObject **)&s->c; }

static int Server_init(Server *s, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"parse_request", "app", "base", "board", "adopt", "conclude",
                            "encode_status", "encode_headers", "to_bytes", "bytesio",
                            "limit", "timeout", "tcp", NULL};
    PyObject *o[N_CALLS];
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!OOOOOOOndp:Server", names,
                                     &o[0], &o[1], &PyDict_Type, &o[2], &o[3], &o[4], &o[5],
                                     &o[6], &o[7], &o[8], &o[9], &s->limit, &s->timeout,
                                     &s->tcp))
        return -1;
    for (int i = 0; i < N_CALLS; i++) {
        Py_INCREF(o[i]);
        Py_XSETREF(calls(s)[i], o[i]);
    }
    if (s->buf == NULL && (s->buf = PyMem_Malloc(RECV_SIZE)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int Server_traverse(Server *s, visitproc visit, void *arg)
{
    for (int i = 0; i < N_CALLS; i++)
        Py_VISIT(calls(s)[i]);
    return 0;
}

static int Server_clear(Server *s)
{
    for (int i = 0; i < N_CALLS; i++)
        Py_CLEAR(calls(s)[i]);
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
    if (PyType_Ready(&ServerType) < 0 || PyType_Ready(&fp_AnswerType) < 0
            || PyType_Ready(&fp_ErrorsType) < 0)
        return NULL;
    if (intern(&fp_s_request_started, "request_started") < 0
            || intern(&fp_s_request_finished, "request_finished") < 0
            || intern(&fp_s_set_state, "set_state") < 0 || intern(&fp_s_finishing, "finishing") < 0
            || intern(&fp_s_script, "SCRIPT_NAME") < 0 || intern(&fp_s_path, "PATH_INFO") < 0
            || intern(&fp_s_query, "QUERY_STRING") < 0 || intern(&fp_s_uri, "REQUEST_URI") < 0
            || intern(&fp_s_https, "HTTPS") < 0 || intern(&fp_s_scheme, "wsgi.url_scheme") < 0
            || intern(&fp_s_input, "wsgi.input") < 0 || intern(&fp_s_errors, "wsgi.errors") < 0
            || intern(&fp_s_empty, "") < 0 || intern(&fp_s_slash, "/") < 0
            || intern(&fp_s_on, "on") < 0 || intern(&fp_s_one, "1") < 0
            || intern(&fp_s_https_value, "https") < 0
            || intern(&fp_s_http_ct, "HTTP_CONTENT_TYPE") < 0
            || intern(&fp_s_http_cl, "HTTP_CONTENT_LENGTH") < 0
            || intern(&fp_s_req, "req") < 0 || intern(&fp_s_stderr, "stderr") < 0
            || intern(&fp_s_stopping, "stopping") < 0
            || intern(&fp_s_max_requests, "max_requests") < 0
            || intern(&fp_s_request_done, "request_done") < 0
            || intern(&fp_s_write, "write") < 0
            || intern(&fp_s_start_response, "start_response") < 0)
        return NULL;
    for (int i = 0; i < 4; i++)
        if (intern(&fp_required[i], req_names[i]) < 0)
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
