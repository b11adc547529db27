/* What the fast path's C files share (_fastpath.c has the overview). */
#ifndef FASTPATH_H
#define FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define RESPONDER 1
#define KEEP_CONN 1
#define RECV_SIZE 65536
/* A worker woken by nginx's connect() may look before the request it
 * writes next is there: the fast path waits this long (at most) for it
 * before it leaves the connection to the Python path, which shows
 * 'reading' while it waits. */
#define FIRST_READ_GRACE 0.05

/* The Python objects a Server calls, in the order Server() takes them. */
typedef struct {
    PyObject *parse_request, *app, *base, *board, *adopt, *conclude;
    PyObject *encode_status, *encode_headers, *to_bytes, *bytesio;
} Calls;

#define N_CALLS ((int)(sizeof(Calls) / sizeof(PyObject *)))

typedef struct {
    PyObject_HEAD
    Calls c;
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
    vectorcallfunc vectorcall;      /* fp_answer_vectorcall */
} Answer;

/* wsgi.errors: writing to it hands the request over (FastCGI's stderr). */
typedef struct {
    PyObject_HEAD
    Answer *answer;
} Errors;

/* What gateway.wsgi_environ and flup's _sanitizeEnv change, worked out
 * before anything is changed (fastpath_environ.c). */
typedef struct { PyObject *script, *rule_path, *path, *query; } Plan;

extern PyTypeObject fp_AnswerType, fp_ErrorsType;
/* interned names (_fastpath.c makes them) */
extern PyObject *fp_s_request_started, *fp_s_request_finished, *fp_s_set_state;
extern PyObject *fp_s_finishing, *fp_s_script, *fp_s_path, *fp_s_query, *fp_s_uri;
extern PyObject *fp_s_https, *fp_s_scheme, *fp_s_input, *fp_s_errors, *fp_s_empty;
extern PyObject *fp_s_slash, *fp_s_on, *fp_s_one, *fp_s_https_value, *fp_s_http_ct;
extern PyObject *fp_s_http_cl, *fp_s_req, *fp_s_stderr, *fp_s_write, *fp_s_start_response;
extern PyObject *fp_required[4];

/* fastpath_answer.c */
int fp_hand_over(Answer *a);
PyObject *fp_answer_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames);
/* fastpath_environ.c */
int fp_plan_environ(PyObject *params, Plan *p);
void fp_plan_clear(Plan *p);
int fp_make_environ(Server *s, PyObject *env, Plan *p, PyObject *body, Answer *a);
/* fastpath_send.c */
PyObject *fp_answer_list(Server *s, Answer *a, PyObject *result);
int fp_wait(int fd, short events, double seconds);

#endif
