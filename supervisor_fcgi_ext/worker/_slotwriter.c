/* The two scoreboard updates every request makes, in C.
 *
 * slotwriter.SlotWriter does the same in Python; in a busy worker its two
 * updates cost about 7% of a hello-world request's throughput, almost all
 * of it the interpreter running their bytecode.  Here each update is one
 * call.  The stores follow docs/scoreboard.rst, with real release ordering
 * (the Python writer relies on x86's store order).  Everything else (the
 * file, the rare updates, threads) stays in slotwriter.py, which uses this
 * type as the base of its fast writer when the offsets below match its own;
 * its rare updates open and close the seqlock with _seq_open and _seq_close
 * here, so their stores are fenced too.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#define RECORD_SIZE 1024
#define SEQ 16
#define LAST_REQUEST_DURATION 24
#define LAST_REQUEST_CPU 32
#define LAST_REQUEST_MEMORY 40
#define BYTES_SENT 48
#define EXCEPTIONS 56
#define LAST_STATUS 64
#define ACTIVE 72
#define STATE 74
#define CONNECTIONS 76
#define REQUESTS 80
#define ACCEPTED_CONN 88
#define REQUEST_START 96
#define CONTENT_LENGTH 104
#define METHOD 112
#define METHOD_SIZE 16
#define URI 128
#define URI_SIZE 256
#define DURATION_COUNTS 416
#define DURATION_BUCKETS 12
#define DURATION_SUM (DURATION_COUNTS + 8 * DURATION_BUCKETS)

/* Upper bounds (µs, inclusive) of the duration buckets but the last, as
 * scoreboard.DURATION_BOUNDS_US (checked by slotwriter.py at import). */
static const long long duration_bounds[DURATION_BUCKETS - 1] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

#define STATE_IDLE 1
#define STATE_READING 2
#define STATE_RUNNING 3

/* CPU and peak RSS are read after a request of this wall time (ns) or more,
 * and every (SAMPLE_MASK + 1)th request: as slotwriter.SlotWriter does. */
#define SAMPLE_WALL 10000000LL
#define SAMPLE_MASK 15

#ifndef RUSAGE_THREAD
#define RUSAGE_THREAD RUSAGE_SELF
#endif

#if PY_VERSION_HEX >= 0x030C0000
#define NOT_READY(text) 0       /* every str is ready since 3.12 */
#else
#define NOT_READY(text) (PyUnicode_READY(text) < 0)
#endif

typedef struct {
    PyObject_HEAD
    Py_buffer view;             /* the record, RECORD_SIZE writable bytes */
    unsigned char *rec;         /* NULL once released */
    PyObject *mm;
    PyObject *words;
    unsigned long long seq, requests, accepted_conn, exceptions, protocol_errors;
    unsigned long long bytes_sent, rss;
    long long start, window;    /* ns: the request's start, wall time since the CPU reading */
    double cpu, cpu_pct;        /* s: the thread's CPU at the reading; % since the one before */
    int active, connections;
    unsigned long long counts[DURATION_BUCKETS], duration_sum;   /* the histogram */
} Writer;

static PyObject *str_method, *str_uri, *str_length, *str_script, *str_path, *str_query;

static inline void put16(unsigned char *at, unsigned v) { uint16_t x = (uint16_t)v; memcpy(at, &x, 2); }
static inline void put64(unsigned char *at, uint64_t v) { memcpy(at, &v, 8); }
static inline void putf64(unsigned char *at, double v) { memcpy(at, &v, 8); }

static inline void seq_begin(Writer *self)
{
    self->seq += 2;
    __atomic_store_n((uint64_t *)(self->rec + SEQ), self->seq - 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline void seq_end(Writer *self)
{
    __atomic_store_n((uint64_t *)(self->rec + SEQ), self->seq, __ATOMIC_RELEASE);
}

static inline void put_state_word(Writer *self, int state)
{
    uint64_t word = (uint64_t)(self->active & 0xffff) | (uint64_t)state << 16
                    | (uint64_t)(self->connections & 0xffff) << 32;
    put64(self->rec + ACTIVE, word);
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A param's bytes as SlotWriter stores them: latin-1 when it fits (flup
 * decodes params as latin-1, so these are the raw bytes), else UTF-8 with
 * replacement, held by owner.  Anything but a str is empty. */
typedef struct {
    const char *data;
    Py_ssize_t len;
    PyObject *owner;
} Text;

static int get_text(PyObject *value, Text *out)
{
    out->data = "";
    out->len = 0;
    out->owner = NULL;
    if (value == NULL || !PyUnicode_Check(value) || NOT_READY(value))
        return 0;
    if (PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND) {
        out->data = (const char *)PyUnicode_1BYTE_DATA(value);
        out->len = PyUnicode_GET_LENGTH(value);
        return 0;
    }
    out->owner = PyUnicode_AsEncodedString(value, "utf-8", "replace");
    if (out->owner == NULL)
        return -1;
    out->data = PyBytes_AS_STRING(out->owner);
    out->len = PyBytes_GET_SIZE(out->owner);
    return 0;
}

/* The texts one after the other in a field of size bytes, truncated, and a
 * NUL after them when they are shorter: what follows it is left as it was
 * (the format leaves it undefined), so a short URI dirties one cache line,
 * not four. */
static void put_texts(unsigned char *to, Py_ssize_t size, const Text *texts, int count)
{
    Py_ssize_t used = 0;
    for (int i = 0; i < count && used < size; i++) {
        Py_ssize_t len = texts[i].len < size - used ? texts[i].len : size - used;
        memcpy(to + used, texts[i].data, len);
        used += len;
    }
    if (used < size)
        to[used] = 0;
}

static PyObject *get_param(PyObject *params, PyObject *name)
{
    PyObject *value = PyDict_GetItemWithError(params, name);   /* borrowed */
    if (value == NULL && PyErr_Occurred())
        PyErr_Clear();
    return value;
}

/* CONTENT_LENGTH: ASCII digits, 18 at most (what fits 63 bits), else 0. */
static long long parse_length(PyObject *text)
{
    long long n = 0;
    if (text == NULL || !PyUnicode_Check(text) || NOT_READY(text)
            || PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND)
        return 0;
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    const Py_UCS1 *digits = PyUnicode_1BYTE_DATA(text);
    if (len == 0 || len > 18)
        return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (digits[i] < '0' || digits[i] > '9')
            return 0;
        n = n * 10 + (digits[i] - '0');
    }
    return n;
}

/* texts[0] the method; then the URI: REQUEST_URI, or SCRIPT_NAME +
 * PATH_INFO [+ '?' QUERY_STRING] when the web server sent none (as
 * scoreboard.request_uri).  Returns how many texts, or -1 on error. */
#define REQUEST_TEXTS 5
static int get_request_texts(PyObject *params, Text *texts)
{
    PyObject *uri = get_param(params, str_uri);
    for (int i = 0; i < REQUEST_TEXTS; i++)
        texts[i].owner = NULL;
    if (get_text(get_param(params, str_method), &texts[0]) < 0)
        return -1;
    if (uri != NULL)
        return get_text(uri, &texts[1]) < 0 ? -1 : 2;
    if (get_text(get_param(params, str_script), &texts[1]) < 0
            || get_text(get_param(params, str_path), &texts[2]) < 0
            || get_text(get_param(params, str_query), &texts[4]) < 0)
        return -1;
    if (texts[4].len == 0)
        return 3;
    texts[3] = (Text){"?", 1, NULL};
    return 5;
}

static void release_texts(Text *texts)
{
    for (int i = 0; i < REQUEST_TEXTS; i++)
        Py_XDECREF(texts[i].owner);
}

static int check_open(Writer *self)
{
    if (self->rec == NULL) {
        PyErr_SetString(PyExc_ValueError, "slot writer is closed");
        return -1;
    }
    return 0;
}

/* What PyArg_ParseTupleAndKeywords does for a fastcall, without a tuple or
 * a format to parse: values[i] is the argument named names[i], or NULL. */
static int take_args(const char *func, const char *const *names, int count,
                     PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                     PyObject **values)
{
    if (nargs > count) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)",
                     func, count, nargs);
        return -1;
    }
    for (int i = 0; i < count; i++)
        values[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int i = 0;
        while (i < count && PyUnicode_CompareWithASCIIString(name, names[i]) != 0)
            i++;
        if (i == count || values[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got %s argument '%U'", func,
                         i == count ? "an unexpected keyword" : "multiple values for", name);
            return -1;
        }
        values[i] = args[nargs + k];
    }
    return 0;
}

/* An optional flag: -1 on error. */
static int flag(PyObject *value)
{
    return value == NULL ? 0 : PyObject_IsTrue(value);
}

static PyObject *
Writer_request_started(Writer *self, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames)
{
    static const char *const names[] = {"params", "accepted", "start"};
    PyObject *values[3];
    if (take_args("request_started", names, 3, args, nargs, kwnames, values) < 0)
        return NULL;
    PyObject *params = values[0], *start_arg = values[2];
    int accepted = flag(values[1]);
    if (params == NULL || !PyDict_Check(params)) {
        PyErr_SetString(PyExc_TypeError, "request_started() needs the params dict");
        return NULL;
    }
    if (accepted < 0 || check_open(self) < 0)
        return NULL;
    long long start;
    if (start_arg == NULL || start_arg == Py_None) {
        start = now_ns();
    } else {
        double seconds = PyFloat_AsDouble(start_arg);
        if (seconds == -1.0 && PyErr_Occurred())
            return NULL;
        start = (long long)(seconds * 1e9);
    }
    Text texts[REQUEST_TEXTS];
    int count = get_request_texts(params, texts);
    if (count < 0) {
        release_texts(texts);
        return NULL;
    }
    long long length = parse_length(get_param(params, str_length));

    self->start = start;
    self->requests++;
    self->active++;
    if (accepted) {
        self->accepted_conn++;
        self->connections++;
    }
    unsigned char *rec = self->rec;
    seq_begin(self);
    put_state_word(self, STATE_RUNNING);
    put64(rec + REQUESTS, self->requests);
    put64(rec + ACCEPTED_CONN, self->accepted_conn);
    put64(rec + REQUEST_START, (uint64_t)(start / 1000));
    put64(rec + CONTENT_LENGTH, (uint64_t)length);
    put_texts(rec + METHOD, METHOD_SIZE, texts, 1);
    put_texts(rec + URI, URI_SIZE, texts + 1, count - 1);
    seq_end(self);
    release_texts(texts);
    Py_RETURN_NONE;
}

static void sample(Writer *self, long long window)
{
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) < 0)
        return;
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
                 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    self->cpu_pct = window > 0 ? 1e11 * (cpu - self->cpu) / (double)window : 0.0;
    self->cpu = cpu;
    self->rss = (unsigned long long)ru.ru_maxrss * 1024;
}

static PyObject *
Writer_request_finished(Writer *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    static const char *const names[] = {"status", "failed", "sent", "closing"};
    PyObject *values[4];
    if (take_args("request_finished", names, 4, args, nargs, kwnames, values) < 0)
        return NULL;
    long status = values[0] == NULL ? 0 : PyLong_AsLong(values[0]);
    if (status == -1 && PyErr_Occurred())
        return NULL;
    unsigned long long sent = values[2] == NULL ? 0 : PyLong_AsUnsignedLongLong(values[2]);
    if (sent == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int failed = flag(values[1]), closing = flag(values[3]);
    if (failed < 0 || closing < 0 || check_open(self) < 0)
        return NULL;
    long long now = now_ns();
    long long wall = now - self->start;
    long long us = wall > 0 ? wall / 1000 : 0;      /* the clock may step back */
    int bucket = 0;
    while (bucket < DURATION_BUCKETS - 1 && us > duration_bounds[bucket])
        bucket++;
    self->counts[bucket]++;
    self->duration_sum += (unsigned long long)us;
    long long window = self->window + wall;
    if (wall >= SAMPLE_WALL || !(self->requests & SAMPLE_MASK)) {
        sample(self, window);
        window = 0;
    }
    self->window = window;
    if (self->active)
        self->active--;
    if (failed)
        self->exceptions++;
    self->bytes_sent += sent;
    if (closing && self->connections)
        self->connections--;
    int state = self->active ? STATE_RUNNING : closing ? STATE_IDLE : STATE_READING;
    unsigned char *rec = self->rec;
    seq_begin(self);
    put64(rec + LAST_REQUEST_DURATION, (uint64_t)us);
    putf64(rec + LAST_REQUEST_CPU, self->cpu_pct);
    put64(rec + LAST_REQUEST_MEMORY, self->rss);
    put64(rec + BYTES_SENT, self->bytes_sent);
    put64(rec + EXCEPTIONS, self->exceptions);
    put16(rec + LAST_STATUS, (unsigned)status);
    memset(rec + LAST_STATUS + 2, 0, ACTIVE - LAST_STATUS - 2);
    put_state_word(self, state);
    if (state == STATE_READING) {
        put64(rec + REQUEST_START, (uint64_t)(now / 1000));
        put64(rec + CONTENT_LENGTH, 0);
        rec[METHOD] = 0;
        rec[URI] = 0;
    }
    put64(rec + DURATION_COUNTS + 8 * bucket, self->counts[bucket]);
    put64(rec + DURATION_SUM, self->duration_sum);
    seq_end(self);
    Py_RETURN_NONE;
}

static PyObject *
Writer_seq_open(Writer *self, PyObject *unused)
{
    if (check_open(self) < 0)
        return NULL;
    seq_begin(self);
    Py_RETURN_NONE;
}

static PyObject *
Writer_seq_close(Writer *self, PyObject *unused)
{
    if (check_open(self) < 0)
        return NULL;
    seq_end(self);
    Py_RETURN_NONE;
}

static void release(Writer *self)
{
    if (self->rec != NULL) {
        self->rec = NULL;
        PyBuffer_Release(&self->view);
    }
}

static PyObject *
Writer_release(Writer *self, PyObject *unused)
{
    release(self);
    Py_RETURN_NONE;
}

static int
Writer_init(Writer *self, PyObject *args, PyObject *kwargs)
{
    PyObject *mm;
    if (!PyArg_ParseTuple(args, "O:Writer", &mm))
        return -1;
    release(self);
    if (PyObject_GetBuffer(mm, &self->view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0)
        return -1;
    if (self->view.len < RECORD_SIZE || ((uintptr_t)self->view.buf & 7)) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "a slot record is 1024 aligned bytes");
        return -1;
    }
    self->rec = self->view.buf;
    Py_INCREF(mm);
    Py_XSETREF(self->mm, mm);
    return 0;
}

static int
Writer_traverse(Writer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->mm);
    Py_VISIT(self->words);
    return 0;
}

static int
Writer_clear(Writer *self)
{
    release(self);
    Py_CLEAR(self->words);
    Py_CLEAR(self->mm);
    return 0;
}

static void
Writer_dealloc(Writer *self)
{
    PyObject_GC_UnTrack(self);
    Writer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Writer_methods[] = {
    {"request_started", (PyCFunction)(void (*)(void))Writer_request_started,
     METH_FASTCALL | METH_KEYWORDS,
     "request_started(params, accepted=False, start=None)\n--\n\n"
     "The app is about to be called for the request with these FastCGI params."},
    {"request_finished", (PyCFunction)(void (*)(void))Writer_request_finished,
     METH_FASTCALL | METH_KEYWORDS,
     "request_finished(status=0, failed=False, sent=0, closing=False)\n--\n\n"
     "The request is answered."},
    {"_seq_open", (PyCFunction)Writer_seq_open, METH_NOARGS,
     "The odd seqlock store and a release fence: stores made after it follow it."},
    {"_seq_close", (PyCFunction)Writer_seq_close, METH_NOARGS,
     "The even seqlock store, released after every store made since _seq_open."},
    {"_release", (PyCFunction)Writer_release, METH_NOARGS,
     "Let go of the record, so its mmap can be closed."},
    {NULL}
};

/* The state scoreboard.py's shared methods read and write, by the names
 * SlotWriter uses. */
static PyMemberDef Writer_members[] = {
    {"_mm", T_OBJECT, offsetof(Writer, mm), 0, NULL},
    {"_words", T_OBJECT, offsetof(Writer, words), 0, NULL},
    {"_seq", T_ULONGLONG, offsetof(Writer, seq), 0, NULL},
    {"requests", T_ULONGLONG, offsetof(Writer, requests), 0, NULL},
    {"accepted_conn", T_ULONGLONG, offsetof(Writer, accepted_conn), 0, NULL},
    {"exceptions", T_ULONGLONG, offsetof(Writer, exceptions), 0, NULL},
    {"protocol_errors", T_ULONGLONG, offsetof(Writer, protocol_errors), 0, NULL},
    {"bytes_sent", T_ULONGLONG, offsetof(Writer, bytes_sent), 0, NULL},
    {"_rss", T_ULONGLONG, offsetof(Writer, rss), 0, NULL},
    {"_start", T_LONGLONG, offsetof(Writer, start), 0, NULL},
    {"_window", T_LONGLONG, offsetof(Writer, window), 0, NULL},
    {"_cpu", T_DOUBLE, offsetof(Writer, cpu), 0, NULL},
    {"_cpu_pct", T_DOUBLE, offsetof(Writer, cpu_pct), 0, NULL},
    {"active", T_INT, offsetof(Writer, active), 0, NULL},
    {"connections", T_INT, offsetof(Writer, connections), 0, NULL},
    {NULL}
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "supervisor_fcgi_ext._slotwriter.Writer",
    .tp_doc = "Writer(mm): the per-request updates of a scoreboard slot mapped at mm.",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Writer_init,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_traverse = (traverseproc)Writer_traverse,
    .tp_clear = (inquiry)Writer_clear,
    .tp_methods = Writer_methods,
    .tp_members = Writer_members,
};

static struct PyModuleDef slotwriter_module = {
    PyModuleDef_HEAD_INIT, "supervisor_fcgi_ext._slotwriter",
    "The scoreboard's per-request updates in C (see scoreboard.py).", -1, NULL,
};

PyMODINIT_FUNC
PyInit__slotwriter(void)
{
    if (PyType_Ready(&WriterType) < 0)
        return NULL;
    if (!(str_method = PyUnicode_InternFromString("REQUEST_METHOD"))
            || !(str_uri = PyUnicode_InternFromString("REQUEST_URI"))
            || !(str_length = PyUnicode_InternFromString("CONTENT_LENGTH"))
            || !(str_script = PyUnicode_InternFromString("SCRIPT_NAME"))
            || !(str_path = PyUnicode_InternFromString("PATH_INFO"))
            || !(str_query = PyUnicode_InternFromString("QUERY_STRING")))
        return NULL;
    PyObject *module = PyModule_Create(&slotwriter_module);
    if (module == NULL)
        return NULL;
    PyObject *layout = Py_BuildValue(
        "{sisisisisisisisisisisisisisisisisisisi}",
        "last_request_duration", LAST_REQUEST_DURATION, "last_request_cpu", LAST_REQUEST_CPU,
        "last_request_memory", LAST_REQUEST_MEMORY, "bytes_sent", BYTES_SENT,
        "exceptions", EXCEPTIONS, "last_status", LAST_STATUS, "active", ACTIVE,
        "state", STATE, "connections", CONNECTIONS, "requests", REQUESTS,
        "accepted_conn", ACCEPTED_CONN, "request_start", REQUEST_START,
        "content_length", CONTENT_LENGTH, "method", METHOD, "uri", URI,
        "seq", SEQ, "record_size", RECORD_SIZE,
        "request_duration_counts", DURATION_COUNTS, "request_duration_sum", DURATION_SUM);
    PyObject *bounds = PyTuple_New(DURATION_BUCKETS - 1);
    for (int i = 0; bounds != NULL && i < DURATION_BUCKETS - 1; i++) {
        PyObject *bound = PyLong_FromLongLong(duration_bounds[i]);
        if (bound == NULL)
            Py_CLEAR(bounds);
        else
            PyTuple_SET_ITEM(bounds, i, bound);
    }
    if (bounds == NULL || PyModule_AddObject(module, "DURATION_BOUNDS_US", bounds) < 0) {
        Py_XDECREF(bounds);
        Py_XDECREF(layout);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&WriterType);
    if (layout == NULL || PyModule_AddObject(module, "LAYOUT", layout) < 0
            || PyModule_AddObject(module, "Writer", (PyObject *)&WriterType) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(&WriterType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
