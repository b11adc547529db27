/* The fast path's environ: gateway.wsgi_environ and flup's _sanitizeEnv,
 * the same keys and values, made in the params dict. */
#include "fastpath.h"

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
void fp_plan_clear(Plan *p)
{
    Py_CLEAR(p->script);
    Py_CLEAR(p->rule_path);
    Py_CLEAR(p->path);
    Py_CLEAR(p->query);
}

int fp_plan_environ(PyObject *params, Plan *p)
{
    memset(p, 0, sizeof *p);
    PyObject *script = get(params, fp_s_script), *path = get(params, fp_s_path);
    PyObject *uri = get(params, fp_s_uri), *query = get(params, fp_s_query);
    if ((script && !is_text(script)) || (path && !is_text(path)) || (uri && !is_text(uri))
            || (query && !is_text(query)))
        return 0;
    for (int i = 0; i < 4; i++)
        if (get(params, fp_required[i]) == NULL)
            return 0;
    if (script != NULL && PyUnicode_GET_LENGTH(script) == 1
            && PyUnicode_READ_CHAR(script, 0) == '/') {
        /* SCRIPT_NAME '' and PATH_INFO '/' + PATH_INFO.lstrip('/') */
        Py_ssize_t len = path ? PyUnicode_GET_LENGTH(path) : 0, at = 0;
        while (at < len && PyUnicode_READ_CHAR(path, at) == '/')
            at++;
        PyObject *rest = path ? PyUnicode_Substring(path, at, len)
                              : (Py_INCREF(fp_s_empty), fp_s_empty);
        p->rule_path = rest ? PyUnicode_Concat(fp_s_slash, rest) : NULL;
        Py_XDECREF(rest);
        if (p->rule_path == NULL)
            return -1;
        Py_INCREF(fp_s_empty);
        p->script = fp_s_empty;
        script = fp_s_empty;
        path = p->rule_path;
    }
    if (script == NULL) {
        Py_INCREF(fp_s_empty);
        p->script = fp_s_empty;
        script = fp_s_empty;
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
            Py_INCREF(fp_s_empty);
            p->path = fp_s_empty;
        }
    }
    if (query == NULL || PyUnicode_GET_LENGTH(query) == 0) {
        p->query = mark >= 0 ? PyUnicode_Substring(uri, mark + 1, ulen)
                             : (Py_INCREF(fp_s_empty), fp_s_empty);
        if (p->query == NULL)
            return -1;
    }
    return 1;
}

/* params into the environ, as planned; 0 or -1 */
int fp_make_environ(Server *s, PyObject *env, Plan *p, PyObject *body, Answer *a)
{
    if (PyDict_Update(env, s->c.base) < 0)
        return -1;
    PyObject *drop[2] = {fp_s_http_ct, fp_s_http_cl};
    for (int i = 0; i < 2; i++)
        if (get(env, drop[i]) != NULL && PyDict_DelItem(env, drop[i]) < 0)
            return -1;
    if (p->rule_path != NULL && (PyDict_SetItem(env, fp_s_script, p->script) < 0
                                 || PyDict_SetItem(env, fp_s_path, p->rule_path) < 0))
        return -1;
    PyObject *https = get(env, fp_s_https);
    if (https != NULL && is_text(https)
            && (PyUnicode_Compare(https, fp_s_on) == 0 || PyUnicode_Compare(https, fp_s_one) == 0)
            && PyDict_SetItem(env, fp_s_scheme, fp_s_https_value) < 0)
        return -1;
    PyObject *input = PyObject_CallOneArg(s->c.bytesio, body);
    if (input == NULL || PyDict_SetItem(env, fp_s_input, input) < 0) {
        Py_XDECREF(input);
        return -1;
    }
    Py_DECREF(input);
    Errors *errors = PyObject_GC_New(Errors, &fp_ErrorsType);
    if (errors == NULL)
        return -1;
    Py_INCREF(a);
    errors->answer = a;
    PyObject_GC_Track(errors);
    int rc = PyDict_SetItem(env, fp_s_errors, (PyObject *)errors);
    Py_DECREF(errors);
    if (rc < 0)
        return -1;
    if (p->rule_path == NULL && p->script != NULL
            && PyDict_SetItem(env, fp_s_script, p->script) < 0)
        return -1;
    if (p->path != NULL && PyDict_SetItem(env, fp_s_path, p->path) < 0)
        return -1;
    if (p->query != NULL && PyDict_SetItem(env, fp_s_query, p->query) < 0)
        return -1;
    return 0;
}

