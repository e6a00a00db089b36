/*
 * aperion_event_bus._speedups: optional C accelerator (CPython 3.11+ C API).
 *
 * Every function here has a pure-Python twin that stays the reference
 * (_ids.py, _frozen.py, events.py, bus.py, dispatch.py, storage/_replay.py);
 * the Python modules configure this module at import and fall back to their own
 * code whenever a case is not handled here. Behaviour must be identical: same id text, same
 * payload copy, same Event slots, same mailbox format.
 *
 * Thread safety: every function runs with the GIL held and calls no Python
 * code between reading and updating shared state (the id counter).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <time.h>

#define N_FIELDS 9
#define NODE_LEN 12

/* ------------------------------------------------------------------ state */

/* ids (see _ids.py): one counter + node per process, re-seeded after fork */
static uint32_t id_next;                  /* the counter's next value (mod 2**32) */
static char id_node[NODE_LEN];            /* 12 lowercase hex digits */
static PyObject *id_node_str;             /* the same, as str */
static int id_seeded;

/* payload freezing (see _frozen.py) */
static PyTypeObject *frozen_dict_type;    /* _frozen.FrozenDict */
static PyObject *freeze_fallback;         /* _frozen._py_freeze_payload */
static int frozen_is_plain_dict;          /* FrozenDict(d) is dict_new + merge */

/* events (see events.py) */
static PyTypeObject *event_type;          /* events.Event */
static PyObject *event_fallback;          /* events._FastEvent (keyword calls) */
static Py_ssize_t field_offset[N_FIELDS]; /* slot offsets, ENVELOPE_FIELDS order */

static PyObject *empty_tuple;
static PyObject *str_evt;                 /* "evt_" */
static PyObject *str_empty;               /* "" */

static const char HEX[] = "0123456789abcdef";

/* ------------------------------------------------------------------ clock */

/* time.time() exactly as CPython computes it (CLOCK_REALTIME, ns -> float) */
static int
wall_ns(int64_t *out)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *out = (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
    return 0;
}

static double
ns_to_seconds(int64_t t)
{
    if (t % 1000000000 == 0) {
        return (double)(t / 1000000000);
    }
    return (double)t / 1e9;
}

/* -------------------------------------------------------------------- ids */

static inline uint32_t
next_count(void)
{
    return id_next++; /* GIL held, no Python code in between: atomic for threads */
}

static int
ids_ready(void)
{
    if (!id_seeded) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups: ids are not seeded");
        return 0;
    }
    return 1;
}

static void
put_hex(char *out, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = HEX[v & 15];
        v >>= 4;
    }
}

static int
hex_digits(uint64_t v)
{
    int n = 1;
    while (v >>= 4) {
        n++;
    }
    return n;
}

/* prefix + hex(ms) (at least 11 digits) + 8 digits of n + node; ms >= 0 */
static PyObject *
format_id(PyObject *prefix, uint64_t ms, uint32_t n)
{
    char rest[16 + 8 + NODE_LEN];
    int width = hex_digits(ms);
    if (width < 11) {
        width = 11;
    }
    put_hex(rest, ms, width);
    put_hex(rest + width, n, 8);
    memcpy(rest + width + 8, id_node, NODE_LEN);
    Py_ssize_t rest_len = width + 8 + NODE_LEN;
    if (PyUnicode_IS_ASCII(prefix)) {
        Py_ssize_t plen = PyUnicode_GET_LENGTH(prefix);
        PyObject *out = PyUnicode_New(plen + rest_len, 127);
        if (out == NULL) {
            return NULL;
        }
        Py_UCS1 *data = PyUnicode_1BYTE_DATA(out);
        memcpy(data, PyUnicode_1BYTE_DATA(prefix), plen);
        memcpy(data + plen, rest, rest_len);
        return out;
    }
    PyObject *tail = PyUnicode_FromStringAndSize(rest, rest_len);
    if (tail == NULL) {
        return NULL;
    }
    PyObject *out = PyUnicode_Concat(prefix, tail);
    Py_DECREF(tail);
    return out;
}

/* Generic text for out-of-range times: the Python twin's f-string, piece by piece */
static PyObject *
format_with(PyObject *value, const char *spec)
{
    PyObject *fmt = PyUnicode_FromString(spec);
    if (fmt == NULL) {
        return NULL;
    }
    PyObject *out = PyObject_Format(value, fmt);
    Py_DECREF(fmt);
    return out;
}

static PyObject *
slow_event_id(PyObject *ms_obj, uint32_t n)
{
    PyObject *high = NULL, *low = NULL, *a = NULL, *out = NULL;
    PyObject *high_n = PyLong_FromUnsignedLong(n >> 8);
    PyObject *low_n = PyLong_FromUnsignedLong(n & 0xFF);
    if (high_n == NULL || low_n == NULL) {
        goto done;
    }
    a = format_with(ms_obj, "011x");
    high = format_with(high_n, "06x");
    low = format_with(low_n, "02x");
    if (a == NULL || high == NULL || low == NULL) {
        goto done;
    }
    out = PyUnicode_FromFormat("evt_%U%U%U%U", a, high, low, id_node_str);
done:
    Py_XDECREF(high_n);
    Py_XDECREF(low_n);
    Py_XDECREF(a);
    Py_XDECREF(high);
    Py_XDECREF(low);
    return out;
}

/* the evt_ id of Unix time `now` (seconds); steps the counter first, like the twin */
static PyObject *
event_id_for(double now)
{
    uint32_t n = next_count();
    double x = now * 1000.0;
    if (x >= 0.0 && x < 9.0e18) {
        return format_id(str_evt, (uint64_t)(int64_t)x, n);
    }
    PyObject *ms = PyLong_FromDouble(x); /* int(): raises for NaN and infinities */
    if (ms == NULL) {
        return NULL;
    }
    PyObject *out = slow_event_id(ms, n);
    Py_DECREF(ms);
    return out;
}

static PyObject *
sp_seed_ids(PyObject *self, PyObject *args)
{
    unsigned long long start;
    PyObject *node;
    if (!PyArg_ParseTuple(args, "KU:seed_ids", &start, &node)) {
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(node) || PyUnicode_GET_LENGTH(node) != NODE_LEN) {
        PyErr_SetString(PyExc_ValueError, "node must be 12 hex digits");
        return NULL;
    }
    memcpy(id_node, PyUnicode_1BYTE_DATA(node), NODE_LEN);
    Py_INCREF(node);
    Py_XSETREF(id_node_str, node);
    id_next = (uint32_t)(start & 0xFFFFFFFFull);
    id_seeded = 1;
    Py_RETURN_NONE;
}

static PyObject *
sp_event_id_at(PyObject *self, PyObject *now)
{
    if (!ids_ready()) {
        return NULL;
    }
    if (PyFloat_CheckExact(now)) {
        return event_id_for(PyFloat_AS_DOUBLE(now));
    }
    /* any other number: int(now * 1000), as the twin computes it */
    uint32_t n = next_count();
    PyObject *thousand = PyLong_FromLong(1000);
    if (thousand == NULL) {
        return NULL;
    }
    PyObject *scaled = PyNumber_Multiply(now, thousand);
    Py_DECREF(thousand);
    if (scaled == NULL) {
        return NULL;
    }
    PyObject *ms = PyNumber_Long(scaled);
    Py_DECREF(scaled);
    if (ms == NULL) {
        return NULL;
    }
    PyObject *out;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(ms, &overflow);
    if (!overflow && v >= 0) {
        out = format_id(str_evt, (uint64_t)v, n);
    }
    else {
        out = slow_event_id(ms, n);
    }
    Py_DECREF(ms);
    return out;
}

static PyObject *
sp_new_event_id(PyObject *self, PyObject *unused)
{
    int64_t ns;
    if (!ids_ready() || wall_ns(&ns) < 0) {
        return NULL;
    }
    return event_id_for(ns_to_seconds(ns));
}

static PyObject *
sp_new_id(PyObject *self, PyObject *prefix)
{
    int64_t ns;
    if (!ids_ready() || wall_ns(&ns) < 0) {
        return NULL;
    }
    PyObject *text = PyObject_Format(prefix, str_empty); /* as the f-string does */
    if (text == NULL) {
        return NULL;
    }
    int64_t ms = ns / 1000000;
    if (ns % 1000000 != 0 && ns < 0) {
        ms -= 1; /* floor division, like // */
    }
    uint32_t n = next_count();
    PyObject *out;
    if (ms >= 0) {
        out = format_id(text, (uint64_t)ms, n);
    }
    else { /* before 1970: the twin's arithmetic on Python ints */
        out = NULL;
        PyObject *v = PyLong_FromLongLong(ms);
        PyObject *shift = PyLong_FromLong(32);
        PyObject *low = PyLong_FromUnsignedLong(n);
        PyObject *shifted = (v && shift) ? PyNumber_Lshift(v, shift) : NULL;
        PyObject *joined = (shifted && low) ? PyNumber_Or(shifted, low) : NULL;
        PyObject *digits = joined ? format_with(joined, "019x") : NULL;
        if (digits != NULL) {
            out = PyUnicode_FromFormat("%U%U%U", text, digits, id_node_str);
        }
        Py_XDECREF(v);
        Py_XDECREF(shift);
        Py_XDECREF(low);
        Py_XDECREF(shifted);
        Py_XDECREF(joined);
        Py_XDECREF(digits);
    }
    Py_DECREF(text);
    return out;
}

/* The shared counter as an iterator, so the Python twin steps the same counter */
typedef struct {
    PyObject_HEAD
} CounterObject;

static PyObject *
counter_next(PyObject *self)
{
    return PyLong_FromUnsignedLong(next_count());
}

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aperion_event_bus._speedups.IdCounter",
    .tp_basicsize = sizeof(CounterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The process's shared id counter (next() steps it).",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = counter_next,
};

/* ---------------------------------------------------------------- payload */

static int
flat_scalars(PyObject *dict)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            return 0;
        }
        if (value == Py_None || PyUnicode_CheckExact(value) || PyLong_CheckExact(value) ||
            PyBool_Check(value)) {
            continue;
        }
        /* NaN and infinities: the Python twin refuses them with the path */
        if (PyFloat_CheckExact(value) && isfinite(PyFloat_AS_DOUBLE(value))) {
            continue;
        }
        return 0;
    }
    return 1;
}

/* FrozenDict(payload) for an exact dict: what type_call -> dict_new -> dict_init does */
static PyObject *
frozen_copy(PyObject *payload)
{
    if (!frozen_is_plain_dict) {
        return PyObject_CallOneArg((PyObject *)frozen_dict_type, payload);
    }
    PyObject *fd = PyDict_Type.tp_new(frozen_dict_type, empty_tuple, NULL);
    if (fd == NULL) {
        return NULL;
    }
    if (PyDict_Merge(fd, payload, 1) < 0) {
        Py_DECREF(fd);
        return NULL;
    }
    return fd;
}

/* *flat is set to 1 when the result is known to hold only scalars */
static PyObject *
freeze_checked(PyObject *payload, int *flat)
{
    *flat = 0;
    if (Py_IS_TYPE(payload, frozen_dict_type)) {
        return Py_NewRef(payload);
    }
    if (PyDict_CheckExact(payload) && flat_scalars(payload)) {
        *flat = 1;
        return frozen_copy(payload);
    }
    return PyObject_CallOneArg(freeze_fallback, payload);
}

static PyObject *
freeze(PyObject *payload)
{
    int flat;
    return freeze_checked(payload, &flat);
}

static PyObject *
sp_set_frozen(PyObject *self, PyObject *args)
{
    PyObject *cls, *fallback;
    if (!PyArg_ParseTuple(args, "O!O:set_frozen", &PyType_Type, &cls, &fallback)) {
        return NULL;
    }
    PyTypeObject *t = (PyTypeObject *)cls;
    if (!PyType_IsSubtype(t, &PyDict_Type)) {
        PyErr_SetString(PyExc_TypeError, "FrozenDict must subclass dict");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(frozen_dict_type, t);
    Py_INCREF(fallback);
    Py_XSETREF(freeze_fallback, fallback);
    frozen_is_plain_dict = t->tp_new == PyDict_Type.tp_new && t->tp_init == PyDict_Type.tp_init &&
                           t->tp_basicsize == PyDict_Type.tp_basicsize;
    Py_RETURN_NONE;
}

static PyObject *
sp_freeze_payload(PyObject *self, PyObject *payload)
{
    if (frozen_dict_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups: FrozenDict is not configured");
        return NULL;
    }
    return freeze(payload);
}

/* ------------------------------------------------------------------ event */

static const char *FIELD_NAMES[N_FIELDS] = {
    "event_type", "payload",  "timestamp",   "event_id",   "source",
    "correlation_id", "causation_id", "traceparent", "tracestate",
};

/* An Event with its slots filled from `values` (borrowed; NULL -> None), no checks:
 * what events._FastEvent does. */
static PyObject *
new_event(PyObject *const *values, Py_ssize_t n)
{
    PyObject *ev = event_type->tp_alloc(event_type, 0);
    if (ev == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < N_FIELDS; i++) {
        PyObject *v = (i < n && values[i] != NULL) ? values[i] : Py_None;
        *(PyObject **)((char *)ev + field_offset[i]) = Py_NewRef(v);
    }
    return ev;
}

/* The offset of `descr` when it is a plain, writable object slot inside instances
 * of `t` (what a __slots__ entry makes), else -1 */
static Py_ssize_t
plain_slot_offset(PyObject *descr, PyTypeObject *t)
{
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset <= 0 ||
        m->offset + (Py_ssize_t)sizeof(PyObject *) > t->tp_basicsize) {
        return -1;
    }
    return m->offset;
}

static PyObject *
sp_set_event(PyObject *self, PyObject *args)
{
    PyObject *cls, *layout, *fallback;
    if (!PyArg_ParseTuple(args, "O!O!O:set_event", &PyType_Type, &cls, &PyType_Type, &layout,
                          &fallback)) {
        return NULL;
    }
    PyTypeObject *t = (PyTypeObject *)cls;
    if (!PyType_IsSubtype(t, (PyTypeObject *)layout) || t->tp_itemsize != 0 ||
        t->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "Event must be a slotted subclass of the layout");
        return NULL;
    }
    Py_ssize_t offsets[N_FIELDS];
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *descr = PyObject_GetAttrString(layout, FIELD_NAMES[i]);
        if (descr == NULL) {
            return NULL;
        }
        offsets[i] = plain_slot_offset(descr, t);
        Py_DECREF(descr);
        if (offsets[i] < 0) {
            PyErr_Format(PyExc_TypeError, "Event.%s is not a plain slot", FIELD_NAMES[i]);
            return NULL;
        }
    }
    memcpy(field_offset, offsets, sizeof(offsets));
    Py_INCREF(cls);
    Py_XSETREF(event_type, t);
    Py_INCREF(fallback);
    Py_XSETREF(event_fallback, fallback);
    Py_RETURN_NONE;
}

static PyObject *
sp_make_event(PyObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups: Event is not configured");
        return NULL;
    }
    if (kwnames != NULL || n < 4 || n > N_FIELDS) { /* the twin reports or handles it */
        return PyObject_Vectorcall(event_fallback, args, nargsf, kwnames);
    }
    return new_event(args, n);
}

/* An event is a value: once built, nothing can make it refer back to itself. When
 * every field is a string or None and the payload a frozen dict of scalars, the
 * event cannot be part of a reference cycle, so the cyclic GC need not track it
 * (CPython does the same for tuples and dicts of atomic values). A large backlog
 * then costs the collector nothing (a fifth of a publish_nowait burst, measured).
 * dict's own insert re-tracks the payload if anyone forces a container into it
 * past its read-only interface (dict.__setitem__(event.payload, ...)); a cycle
 * made that way back to the event itself is not collected (README: C accelerator). */
static int
atomic_field(PyObject *v)
{
    return v == Py_None || PyUnicode_CheckExact(v);
}

static void
untrack_value_event(PyObject *ev, PyObject *etype, PyObject *frozen, int flat, PyObject *source,
                    PyObject *correlation_id, PyObject *causation_id)
{
    if (!Py_IS_TYPE(frozen, frozen_dict_type) || !atomic_field(etype) || !atomic_field(source) ||
        !atomic_field(correlation_id) || !atomic_field(causation_id)) {
        return;
    }
    if (PyObject_GC_IsTracked(frozen)) {
        if (!flat && !flat_scalars(frozen)) {
            return;
        }
        PyObject_GC_UnTrack(frozen);
    }
    PyObject_GC_UnTrack(ev);
}

/* The non-traced envelope of bus._envelope, after correlation/causation lookup:
 * one clock read for timestamp and id, the id, the frozen payload, the Event. */
static PyObject *
build_event(PyObject *etype, PyObject *payload, PyObject *source, PyObject *correlation_id,
            PyObject *causation_id)
{
    int64_t ns;
    if (wall_ns(&ns) < 0) {
        return NULL;
    }
    double now = ns_to_seconds(ns);
    PyObject *event_id = event_id_for(now);
    if (event_id == NULL) {
        return NULL;
    }
    int flat;
    PyObject *frozen = freeze_checked(payload, &flat);
    if (frozen == NULL) {
        Py_DECREF(event_id);
        return NULL;
    }
    PyObject *stamp = PyFloat_FromDouble(now);
    if (stamp == NULL) {
        Py_DECREF(event_id);
        Py_DECREF(frozen);
        return NULL;
    }
    PyObject *values[7] = {
        etype, frozen, stamp, event_id, source,
        correlation_id != Py_None ? correlation_id : event_id, causation_id,
    };
    PyObject *ev = new_event(values, 7);
    if (ev != NULL) {
        untrack_value_event(ev, etype, frozen, flat, source, values[5], causation_id);
    }
    Py_DECREF(event_id);
    Py_DECREF(frozen);
    Py_DECREF(stamp);
    return ev;
}

static int
envelope_ready(void)
{
    if (!id_seeded || frozen_dict_type == NULL || event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups: the envelope is not configured");
        return 0;
    }
    return 1;
}

static PyObject *
sp_build_event(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "build_event takes 5 positional arguments");
        return NULL;
    }
    if (!envelope_ready()) {
        return NULL;
    }
    return build_event(args[0], args[1], args[2], args[3], args[4]);
}

/* ------------------------------------------------------------ replay pages */

/* decode_page (see storage/_replay.py, _py_decode_page): the stored bodies of a
 * replay page, as SQLite's group_concat(body, ',') returns them, parsed straight
 * into Events. What json.loads + decode_events make, without the intermediate
 * envelope dicts: payload objects become FrozenDicts and arrays FrozenLists as
 * they are parsed, payload keys seen earlier in the page are reused, and value
 * events are left untracked by the GC (see untrack_value_event). Any text this
 * reader does not handle itself (invalid JSON, an envelope of another shape, an
 * escaped envelope key, deep nesting) goes to the Python twin as a whole page, so
 * results and errors stay the twin's. */

static PyTypeObject *frozen_list_type;    /* _frozen.FrozenList */
static PyObject *decode_fallback;         /* storage._replay._py_decode_page */
static int frozen_list_is_plain;          /* tp_alloc + PyList_Append builds one */

#define KEY_CACHE 64                      /* payload key strings reused per page */
#define MAX_DEPTH 64                      /* deeper payloads go to the twin */
#define SHORT_NUMBER 64                   /* numbers copied to the stack for parsing */

static Py_ssize_t field_length[N_FIELDS]; /* strlen of FIELD_NAMES, set by set_decode */

typedef struct {
    const char *p;                        /* next byte (UTF-8 of the page text) */
    const char *end;
    int depth;
    PyObject *keys[KEY_CACHE];            /* owned; NULL: empty slot */
    PyObject *last_type;                  /* previous event_type (owned, reused if equal) */
} Reader;

/* 1 when the object cannot refer to anything (atomic) or is a container this
 * reader built and left untracked (it holds only such values) */
static inline int
is_value(PyObject *v)
{
    return !PyObject_IS_GC(v) || !PyObject_GC_IsTracked(v);
}

static inline void
skip_ws(Reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) {
        r->p++;
    }
}

/* 1 and past `word` when the text continues with it */
static inline int
take(Reader *r, const char *word, Py_ssize_t n)
{
    if (r->end - r->p < n || memcmp(r->p, word, n) != 0) {
        return 0;
    }
    r->p += n;
    return 1;
}

static inline int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* four hex digits at s (r->end checked by the caller), or -1 */
static int
hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_value(s[i]);
        if (d < 0) {
            return -1;
        }
        v = (v << 4) | d;
    }
    return v;
}

/* one code point of valid UTF-8 (the page text came from a str) */
static Py_UCS4
utf8_char(const unsigned char **at)
{
    const unsigned char *s = *at;
    Py_UCS4 c = s[0];
    if (c < 0xE0) {
        *at = s + 2;
        return ((c & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (c < 0xF0) {
        *at = s + 3;
        return ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *at = s + 4;
    return ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

/* A string with escapes, from just after its opening quote: what json's
 * scanstring does (a high surrogate escape followed by a low one is one
 * character; a lone one is kept). NULL without an exception: not handled. */
static PyObject *
escaped_string(Reader *r)
{
    Py_ssize_t cap = 64, n = 0;
    Py_UCS4 *buf = PyMem_Malloc(cap * sizeof(Py_UCS4));
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    const unsigned char *s = (const unsigned char *)r->p;
    const unsigned char *end = (const unsigned char *)r->end;
    PyObject *out = NULL;
    for (;;) {
        if (s >= end) {
            goto done;
        }
        if (n + 2 > cap) {
            cap *= 2;
            Py_UCS4 *bigger = PyMem_Realloc(buf, cap * sizeof(Py_UCS4));
            if (bigger == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            buf = bigger;
        }
        Py_UCS4 c = *s;
        if (c == '"') {
            s++;
            break;
        }
        if (c < 0x20) {
            goto done; /* json rejects control characters (strict) */
        }
        if (c >= 0x80) {
            buf[n++] = utf8_char(&s);
            continue;
        }
        if (c != '\\') {
            buf[n++] = c;
            s++;
            continue;
        }
        if (end - s < 2) {
            goto done;
        }
        switch (s[1]) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            if (end - s < 6) {
                goto done;
            }
            int u = hex4((const char *)s + 2);
            if (u < 0) {
                goto done;
            }
            s += 6;
            c = (Py_UCS4)u;
            if (Py_UNICODE_IS_HIGH_SURROGATE(c) && end - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                int low = hex4((const char *)s + 2);
                if (low >= 0 && Py_UNICODE_IS_LOW_SURROGATE((Py_UCS4)low)) {
                    c = Py_UNICODE_JOIN_SURROGATES(c, (Py_UCS4)low);
                    s += 6;
                }
            }
            buf[n++] = c;
            continue;
        }
        default:
            goto done;
        }
        buf[n++] = c;
        s += 2;
    }
    out = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, n);
    r->p = (const char *)s;
done:
    PyMem_Free(buf);
    return out;
}

/* The string at r->p (its opening quote). `raw`/`raw_len` get the bytes between
 * the quotes when there was no escape (else raw is NULL). */
static PyObject *
read_string(Reader *r, const char **raw, Py_ssize_t *raw_len)
{
    const unsigned char *start = (const unsigned char *)r->p + 1;
    const unsigned char *s = start, *end = (const unsigned char *)r->end;
    unsigned char high = 0;
    while (s < end && *s != '"' && *s != '\\' && *s >= 0x20) {
        high |= *s++;
    }
    *raw = NULL;
    if (s >= end || *s != '"') {
        if (s < end && *s == '\\') {
            r->p = (const char *)start;
            return escaped_string(r);
        }
        return NULL; /* unterminated, or a control character */
    }
    Py_ssize_t n = s - start;
    r->p = (const char *)s + 1;
    *raw = (const char *)start;
    *raw_len = n;
    if (high & 0x80) {
        return PyUnicode_DecodeUTF8((const char *)start, n, NULL);
    }
    PyObject *out = PyUnicode_New(n, 127);
    if (out != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(out), start, n);
    }
    return out;
}

static PyObject *
plain_string(Reader *r)
{
    const char *raw;
    Py_ssize_t n;
    return read_string(r, &raw, &n);
}

/* A payload key: an ASCII key seen earlier in the page is the same str object
 * (json.loads shares equal keys within one call too); its hash is then known. */
static PyObject *
read_key(Reader *r)
{
    const char *raw;
    Py_ssize_t n;
    const unsigned char *s = (const unsigned char *)r->p + 1;
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; s + i < (const unsigned char *)r->end && s[i] != '"' && i < 64; i++) {
        h = (h ^ s[i]) * 16777619u;
    }
    PyObject **slot = &r->keys[h % KEY_CACHE];
    PyObject *cached = *slot;
    if (cached != NULL) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(cached);
        if (r->end - r->p >= len + 2 && r->p[len + 1] == '"' &&
            memcmp(PyUnicode_1BYTE_DATA(cached), r->p + 1, len) == 0) {
            r->p += len + 2;
            return Py_NewRef(cached);
        }
    }
    PyObject *key = read_string(r, &raw, &n);
    if (key != NULL && raw != NULL && PyUnicode_IS_ASCII(key) && n <= 64) {
        Py_XSETREF(*slot, Py_NewRef(key));
    }
    return key;
}

/* A JSON number, as json.loads makes it: int (PyLong_FromString for long ones)
 * or float (float(text): correctly rounded, overflow -> inf). */
static PyObject *
read_number(Reader *r)
{
    const char *s = r->p, *end = r->end;
    int is_float = 0;
    if (s < end && *s == '-') {
        s++;
    }
    if (s < end && *s == '0') {
        s++;
    } else if (s < end && *s >= '1' && *s <= '9') {
        while (s < end && *s >= '0' && *s <= '9') {
            s++;
        }
    } else {
        return NULL;
    }
    if (s < end && *s == '.') {
        if (++s >= end || *s < '0' || *s > '9') {
            return NULL;
        }
        while (s < end && *s >= '0' && *s <= '9') {
            s++;
        }
        is_float = 1;
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < end && (*s == '+' || *s == '-')) {
            s++;
        }
        if (s >= end || *s < '0' || *s > '9') {
            return NULL;
        }
        while (s < end && *s >= '0' && *s <= '9') {
            s++;
        }
        is_float = 1;
    }
    Py_ssize_t n = s - r->p;
    const char *text = r->p;
    r->p = s;
    if (!is_float && n <= 18) {
        long long v = 0;
        int negative = *text == '-';
        for (const char *d = text + negative; d < s; d++) {
            v = v * 10 + (*d - '0');
        }
        return PyLong_FromLongLong(negative ? -v : v);
    }
    char small[SHORT_NUMBER];
    char *copy = n < SHORT_NUMBER ? small : PyMem_Malloc(n + 1);
    if (copy == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(copy, text, n);
    copy[n] = '\0';
    PyObject *out;
    if (is_float) {
        double d = PyOS_string_to_double(copy, NULL, NULL);
        out = (d == -1.0 && PyErr_Occurred()) ? NULL : PyFloat_FromDouble(d);
    } else {
        out = PyLong_FromString(copy, NULL, 10);
    }
    if (copy != small) {
        PyMem_Free(copy);
    }
    return out;
}

static PyObject *read_value(Reader *r);

/* Past a container's opening bracket: 1 when it is empty (`close` taken) */
static int
opens_empty(Reader *r, char close)
{
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return 1;
    }
    return 0;
}

/* After a container's item: 1 past a ',' (another item follows), 0 past the
 * closing `close`, -1 for anything else */
static int
after_item(Reader *r, char close)
{
    skip_ws(r);
    if (r->p < r->end && *r->p == ',') {
        r->p++;
        skip_ws(r);
        return 1;
    }
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return 0;
    }
    return -1;
}

/* Past the ':' after an object key; 0 when there is none */
static int
take_colon(Reader *r)
{
    skip_ws(r);
    if (r->p >= r->end || *r->p != ':') {
        return 0;
    }
    r->p++;
    skip_ws(r);
    return 1;
}

/* A container once its last item is read (`more` 0), left untracked when it
 * holds only values; NULL after a syntax error (`more` -1) */
static PyObject *
finished(PyObject *container, int values, int more)
{
    if (more < 0) {
        Py_DECREF(container);
        return NULL;
    }
    if (values) {
        PyObject_GC_UnTrack(container);
    }
    return container;
}

/* A payload object as a FrozenDict */
static PyObject *
read_object(Reader *r)
{
    PyObject *fd = PyDict_Type.tp_new(frozen_dict_type, empty_tuple, NULL);
    if (fd == NULL) {
        return NULL;
    }
    int values = 1, more = !opens_empty(r, '}');
    while (more > 0) {
        PyObject *key = r->p < r->end && *r->p == '"' ? read_key(r) : NULL;
        PyObject *value = key != NULL && take_colon(r) ? read_value(r) : NULL;
        if (value == NULL || PyDict_SetItem(fd, key, value) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_DECREF(fd);
            return NULL;
        }
        values &= is_value(value);
        Py_DECREF(key);
        Py_DECREF(value);
        more = after_item(r, '}');
    }
    return finished(fd, values, more);
}

/* A payload array as a FrozenList */
static PyObject *
read_array(Reader *r)
{
    PyObject *list = frozen_list_type->tp_alloc(frozen_list_type, 0);
    if (list == NULL) {
        return NULL;
    }
    int values = 1, more = !opens_empty(r, ']');
    while (more > 0) {
        PyObject *value = read_value(r);
        if (value == NULL || PyList_Append(list, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(list);
            return NULL;
        }
        values &= is_value(value);
        Py_DECREF(value);
        more = after_item(r, ']');
    }
    return finished(list, values, more);
}

/* Any JSON value at r->p (no leading whitespace) */
static PyObject *
read_value(Reader *r)
{
    if (r->p >= r->end) {
        return NULL;
    }
    switch (*r->p) {
    case '"':
        return plain_string(r);
    case '{':
    case '[': {
        if (r->depth >= MAX_DEPTH) {
            return NULL;
        }
        r->depth++;
        PyObject *v = *r->p == '{' ? read_object(r) : read_array(r);
        r->depth--;
        return v;
    }
    case 't':
        return take(r, "true", 4) ? Py_NewRef(Py_True) : NULL;
    case 'f':
        return take(r, "false", 5) ? Py_NewRef(Py_False) : NULL;
    case 'n':
        return take(r, "null", 4) ? Py_NewRef(Py_None) : NULL;
    case 'N':
        return take(r, "NaN", 3) ? PyFloat_FromDouble(Py_NAN) : NULL;
    case 'I':
        return take(r, "Infinity", 8) ? PyFloat_FromDouble(Py_HUGE_VAL) : NULL;
    case '-':
        if (take(r, "-Infinity", 9)) {
            return PyFloat_FromDouble(-Py_HUGE_VAL);
        }
        return read_number(r);
    default:
        return read_number(r);
    }
}

enum { F_TYPE, F_PAYLOAD, F_TIMESTAMP, F_ID, F_SOURCE };

/* The envelope field a key names (FIELD_NAMES order), -1 for any other key;
 * `hint` (the field after the previous key) is tried first: the store writes
 * the fields in order. */
static int
field_index(const char *raw, Py_ssize_t n, int hint)
{
    if (hint < N_FIELDS && field_length[hint] == n && memcmp(FIELD_NAMES[hint], raw, n) == 0) {
        return hint;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        if (field_length[i] == n && memcmp(FIELD_NAMES[i], raw, n) == 0) {
            return i;
        }
    }
    return -1;
}

/* An envelope key at r->p (its opening quote), without making a str: 1 and its
 * bytes when it has no escape or control character, else 0 (the twin decides:
 * an escaped key could spell a field name) */
static int
envelope_key(Reader *r, const char **raw, Py_ssize_t *n)
{
    const char *start = r->p + 1, *s = start;
    while (s < r->end && *s != '"' && *s != '\\' && (unsigned char)*s >= 0x20) {
        s++;
    }
    if (s >= r->end || *s != '"') {
        return 0;
    }
    *raw = start;
    *n = s - start;
    r->p = s + 1;
    return 1;
}

/* An envelope field's value: str or null for the text fields (the event type and
 * id must be strings), a number for the timestamp (float(int) for an int), an
 * object for the payload; anything else goes to the twin (NULL). */
static PyObject *
read_field(Reader *r, int field)
{
    if (r->p >= r->end) {
        return NULL;
    }
    char c = *r->p;
    if (field == F_PAYLOAD) {
        return c == '{' ? read_value(r) : NULL;
    }
    if (field == F_TIMESTAMP) {
        PyObject *stamp = (c == '-' || (c >= '0' && c <= '9')) ? read_number(r) : NULL;
        if (stamp != NULL && !PyFloat_CheckExact(stamp)) {
            double d = PyLong_AsDouble(stamp);
            Py_SETREF(stamp, (d == -1.0 && PyErr_Occurred()) ? NULL : PyFloat_FromDouble(d));
        }
        return stamp;
    }
    if (c == 'n' && field != F_TYPE && field != F_ID) {
        return take(r, "null", 4) ? Py_NewRef(Py_None) : NULL;
    }
    if (c != '"') {
        return NULL;
    }
    if (field == F_TYPE && r->last_type != NULL) { /* one type for a run of events */
        Py_ssize_t len = PyUnicode_GET_LENGTH(r->last_type);
        if (PyUnicode_IS_ASCII(r->last_type) && r->end - r->p >= len + 2 &&
            r->p[len + 1] == '"' && memcmp(PyUnicode_1BYTE_DATA(r->last_type), r->p + 1, len) == 0) {
            r->p += len + 2;
            return Py_NewRef(r->last_type);
        }
    }
    PyObject *text = plain_string(r);
    if (text != NULL && field == F_TYPE) {
        Py_XSETREF(r->last_type, Py_NewRef(text));
    }
    return text;
}

/* One stored envelope as an Event, or NULL (the twin decides) */
static PyObject *
read_event(Reader *r)
{
    PyObject *values[N_FIELDS] = {NULL};
    PyObject *ev = NULL;
    int hint = 0, more;
    if (r->p >= r->end || *r->p != '{' || opens_empty(r, '}')) {
        return NULL; /* not an object, or none of the required fields */
    }
    do {
        const char *raw;
        Py_ssize_t n;
        if (r->p >= r->end || *r->p != '"' || !envelope_key(r, &raw, &n) || !take_colon(r)) {
            goto done;
        }
        int field = field_index(raw, n, hint);
        hint = field + 1;
        PyObject *value = field < 0 ? read_value(r) : read_field(r, field);
        if (value == NULL) {
            goto done;
        }
        if (field < 0) {
            Py_DECREF(value); /* decode_events reads only the envelope fields */
        } else {
            Py_XSETREF(values[field], value); /* a repeated key: the last one wins */
        }
        more = after_item(r, '}');
    } while (more > 0);
    if (more < 0 || values[F_TYPE] == NULL || values[F_PAYLOAD] == NULL ||
        values[F_TIMESTAMP] == NULL || values[F_ID] == NULL) {
        goto done;
    }
    ev = new_event(values, N_FIELDS);
    if (ev != NULL && is_value(values[F_PAYLOAD])) {
        PyObject_GC_UnTrack(ev); /* every other field is a str, None or a float */
    }
done:
    for (int i = 0; i < N_FIELDS; i++) {
        Py_XDECREF(values[i]);
    }
    return ev;
}

/* The Events of `text` ("body,body,..."), or NULL (not handled or an error) */
static PyObject *
read_page(PyObject *text)
{
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 == NULL) {
        return NULL;
    }
    Reader r = {.p = utf8, .end = utf8 + size};
    PyObject *events = PyList_New(0);
    if (events == NULL) {
        return NULL;
    }
    for (;;) {
        skip_ws(&r);
        PyObject *ev = read_event(&r);
        if (ev == NULL || PyList_Append(events, ev) < 0) {
            Py_XDECREF(ev);
            Py_CLEAR(events);
            break;
        }
        Py_DECREF(ev);
        skip_ws(&r);
        if (r.p < r.end && *r.p == ',') {
            r.p++;
            continue;
        }
        if (r.p != r.end) {
            Py_CLEAR(events);
        }
        break;
    }
    for (int i = 0; i < KEY_CACHE; i++) {
        Py_XDECREF(r.keys[i]);
    }
    Py_XDECREF(r.last_type);
    return events;
}

static PyObject *
sp_set_decode(PyObject *self, PyObject *args)
{
    PyObject *cls, *fallback;
    if (!PyArg_ParseTuple(args, "O!O:set_decode", &PyType_Type, &cls, &fallback)) {
        return NULL;
    }
    PyTypeObject *t = (PyTypeObject *)cls;
    if (!PyType_IsSubtype(t, &PyList_Type)) {
        PyErr_SetString(PyExc_TypeError, "FrozenList must subclass list");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(frozen_list_type, t);
    Py_INCREF(fallback);
    Py_XSETREF(decode_fallback, fallback);
    for (int i = 0; i < N_FIELDS; i++) {
        field_length[i] = (Py_ssize_t)strlen(FIELD_NAMES[i]);
    }
    frozen_list_is_plain = t->tp_basicsize == PyList_Type.tp_basicsize &&
                           t->tp_itemsize == 0 && t->tp_alloc == PyType_GenericAlloc;
    Py_RETURN_NONE;
}

static PyObject *
sp_decode_page(PyObject *self, PyObject *text)
{
    if (decode_fallback == NULL || event_type == NULL || frozen_dict_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups: replay decoding is not configured");
        return NULL;
    }
    if (PyUnicode_CheckExact(text) && frozen_is_plain_dict && frozen_list_is_plain) {
        PyObject *events = read_page(text);
        if (events != NULL) {
            return events;
        }
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_MemoryError)) {
            PyErr_Clear(); /* e.g. an int of too many digits: the twin raises its own error */
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyObject_CallOneArg(decode_fallback, text);
}

/* ---------------------------------------------------- publish_nowait (bus) */

/* what the bus hot path reads (see bus.EventBus.publish_nowait and its helpers) */
static PyTypeObject *bus_type;            /* bus.EventBus (exact type only) */
static PyObject *py_publish_nowait;       /* the Python method: every other case */
static PyObject *running_loop_fn;         /* asyncio._get_running_loop */
static PyObject *current_event_var;       /* context._current_event */
static PyObject *correlation_var;         /* context._correlation_id */
static int context_layout_ok;             /* Context internals checked at set_bus */

static PyObject *s_dispatcher, *s_quick_loop, *s_slow_publish, *s_schemas, *s_tracer,
    *s_audit, *s_metrics, *s_published, *s_count_published, *s_registry, *s_cache, *s_match,
    *s_last_ctx, *s_acc, *s_place_new, *s_lane, *s_active, *s_closing, *s_dead, *s_mailbox,
    *s_tail_ctx, *s_markers, *s_waiter, *s_wake, *s_append, *s_get, *s_event, *s_payload,
    *s_source, *s_correlation_id, *s_causation_id, *s_event_id;

/* CPython's Context object (Include/internal/pycore_context.h, 3.11-3.13); used only
 * after set_bus verified it on live objects, to see that two snapshots share one
 * immutable variable mapping (then they hold identical values). */
typedef struct {
    PyObject_HEAD
    PyObject *ctx_prev;
    PyObject *ctx_vars;
    PyObject *ctx_weakreflist;
    int ctx_entered;
} ContextLayout;

static int
check_context_layout(void)
{
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
    PyObject *a = PyContext_CopyCurrent();
    PyObject *b = PyContext_CopyCurrent();
    PyObject *e = PyContext_New();
    int ok = 0;
    if (a != NULL && b != NULL && e != NULL) {
        PyObject *va = ((ContextLayout *)a)->ctx_vars;
        PyObject *ve = ((ContextLayout *)e)->ctx_vars;
        ok = va != NULL && va == ((ContextLayout *)b)->ctx_vars && ve != NULL &&
             strcmp(Py_TYPE(va)->tp_name, "hamt") == 0 && strcmp(Py_TYPE(ve)->tp_name, "hamt") == 0 &&
             ((ContextLayout *)a)->ctx_weakreflist == NULL && ((ContextLayout *)a)->ctx_entered == 0;
    }
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(e);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        ok = 0;
    }
    return ok;
#else
    return 0;
#endif
}

/* Attributes of the library's own hot objects, read and written without the
 * generic attribute lookup (a type lookup plus a descriptor call or dict probe
 * each: about a third of the C hot paths' cost):
 *  - plain slots of _Lane and Subscription, at their offsets;
 *  - instance attributes of EventBus, Dispatcher and SubscriptionRegistry, in the
 *    instance dict (the class is checked to define no data descriptor of that
 *    name, which would take precedence over the dict).
 * Registered per exact class at configuration; any other object (a subclass too)
 * and any name not registered goes through PyObject_GetAttr/SetAttr. */
#define MAX_FAST_TYPES 5
#define MAX_FAST_NAMES 12
typedef struct {
    PyTypeObject *type;
    int n;
    PyObject *names[MAX_FAST_NAMES];   /* interned: compared by identity */
    Py_ssize_t offsets[MAX_FAST_NAMES]; /* a slot's offset; 0: the instance dict */
} FastType;
static FastType fast_types[MAX_FAST_TYPES];
static int n_fast_types;

static FastType *
fast_type_entry(PyTypeObject *t)
{
    for (int i = 0; i < n_fast_types; i++) {
        if (fast_types[i].type == t) {
            return &fast_types[i];
        }
    }
    if (n_fast_types == MAX_FAST_TYPES) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups: too many fast attribute classes");
        return NULL;
    }
    Py_INCREF(t);
    fast_types[n_fast_types].type = t;
    fast_types[n_fast_types].n = 0;
    return &fast_types[n_fast_types++];
}

/* The slot offset of cls.name (> 0), 0 for an instance-dict attribute, -1 error */
static Py_ssize_t
fast_offset(PyTypeObject *t, PyObject *name)
{
    PyObject *descr = PyObject_GetAttr((PyObject *)t, name);
    if (descr == NULL) { /* not on the class: lives in the instance dict */
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        if (t->tp_dictoffset == 0) {
            PyErr_Format(PyExc_TypeError, "%s instances have no __dict__ for %U", t->tp_name, name);
            return -1;
        }
        return 0;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        if (((PyMemberDescrObject *)descr)->d_common.d_type == t) {
            offset = plain_slot_offset(descr, t);
        }
    }
    else if (Py_TYPE(descr)->tp_descr_set == NULL && t->tp_dictoffset != 0) {
        offset = 0; /* a plain class attribute: the instance dict's value wins */
    }
    Py_DECREF(descr);
    if (offset < 0) {
        PyErr_Format(PyExc_TypeError, "%s.%U is neither a plain slot nor an instance attribute",
                     t->tp_name, name);
    }
    return offset;
}

static int
register_fast(PyObject *cls, PyObject *const *names, size_t count)
{
    PyTypeObject *t = (PyTypeObject *)cls;
    for (size_t i = 0; i < count; i++) {
        Py_ssize_t offset = fast_offset(t, names[i]);
        if (offset < 0) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                return -1;
            }
            PyErr_Clear(); /* not eligible: that name keeps the generic lookup */
            continue;
        }
        FastType *ft = fast_type_entry(t);
        if (ft == NULL) {
            return -1;
        }
        int k = 0;
        while (k < ft->n && ft->names[k] != names[i]) {
            k++;
        }
        if (k == ft->n) {
            if (ft->n == MAX_FAST_NAMES) {
                PyErr_SetString(PyExc_RuntimeError, "_speedups: too many fast attributes");
                return -1;
            }
            Py_INCREF(names[i]);
            ft->names[k] = names[i];
            ft->n++;
        }
        ft->offsets[k] = offset;
    }
    return 0;
}

static inline int fast_lookup_type(PyTypeObject *t, PyObject *name, Py_ssize_t *offset);

/* fast_attributes(cls, names): register cls's hot attributes; returns the names
 * taken (a name that is a property or other data descriptor is left out) */
static PyObject *
sp_fast_attributes(PyObject *self, PyObject *args)
{
    PyObject *cls, *names;
    if (!PyArg_ParseTuple(args, "O!O!:fast_attributes", &PyType_Type, &cls, &PyTuple_Type, &names)) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    PyObject *taken = PyList_New(0);
    if (taken == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_CheckExact(name)) {
            Py_DECREF(taken);
            PyErr_SetString(PyExc_TypeError, "fast_attributes: names must be str");
            return NULL;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        int rc = register_fast(cls, &name, 1);
        Py_ssize_t offset;
        int ok = rc == 0 && fast_lookup_type((PyTypeObject *)cls, name, &offset);
        if (rc < 0 || (ok && PyList_Append(taken, name) < 0)) {
            Py_DECREF(name);
            Py_DECREF(taken);
            return NULL;
        }
        Py_DECREF(name);
    }
    return taken;
}

/* 1 and *offset set when obj.name is registered, else 0 */
static inline int
fast_lookup_type(PyTypeObject *t, PyObject *name, Py_ssize_t *offset)
{
    for (int i = 0; i < n_fast_types; i++) {
        if (fast_types[i].type == t) {
            FastType *ft = &fast_types[i];
            for (int k = 0; k < ft->n; k++) {
                if (ft->names[k] == name) {
                    *offset = ft->offsets[k];
                    return 1;
                }
            }
            return 0;
        }
    }
    return 0;
}

static inline int
fast_lookup(PyObject *obj, PyObject *name, Py_ssize_t *offset)
{
    return fast_lookup_type(Py_TYPE(obj), name, offset);
}

/* obj.name (new reference) */
static PyObject *
fast_get(PyObject *obj, PyObject *name)
{
    Py_ssize_t offset;
    if (fast_lookup(obj, name, &offset)) {
        if (offset > 0) {
            PyObject *v = *(PyObject **)((char *)obj + offset);
            if (v != NULL) {
                return Py_NewRef(v);
            }
        }
        else {
            PyObject **dictptr = _PyObject_GetDictPtr(obj);
            if (dictptr != NULL && *dictptr != NULL) {
                PyObject *v = PyDict_GetItemWithError(*dictptr, name);
                if (v != NULL) {
                    return Py_NewRef(v);
                }
                if (PyErr_Occurred()) {
                    return NULL;
                }
            }
        }
    }
    return PyObject_GetAttr(obj, name); /* raises what Python would */
}

/* obj.name = value */
static int
fast_set(PyObject *obj, PyObject *name, PyObject *value)
{
    Py_ssize_t offset;
    if (fast_lookup(obj, name, &offset)) {
        if (offset > 0) {
            PyObject **slot = (PyObject **)((char *)obj + offset);
            PyObject *old = *slot;
            *slot = Py_NewRef(value);
            Py_XDECREF(old);
            return 0;
        }
        PyObject **dictptr = _PyObject_GetDictPtr(obj);
        if (dictptr != NULL && *dictptr != NULL) {
            return PyDict_SetItem(*dictptr, name, value);
        }
    }
    return PyObject_SetAttr(obj, name, value);
}

static int
is_true_attr(PyObject *obj, PyObject *name)
{
    PyObject *v = fast_get(obj, name);
    if (v == NULL) {
        return -1;
    }
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* 1 when `obj.name is None`, 0 when not, -1 on error */
static int
is_none_attr(PyObject *obj, PyObject *name)
{
    PyObject *v = fast_get(obj, name);
    if (v == NULL) {
        return -1;
    }
    int r = v == Py_None;
    Py_DECREF(v);
    return r;
}

/* obj.name += delta (an int attribute) */
static int
add_to_attr(PyObject *obj, PyObject *name, long delta)
{
    PyObject *v = fast_get(obj, name);
    if (v == NULL) {
        return -1;
    }
    long n = PyLong_AsLong(v);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *nv = PyLong_FromLong(n + delta);
    if (nv == NULL) {
        return -1;
    }
    int r = fast_set(obj, name, nv);
    Py_DECREF(nv);
    return r;
}

/* bus._snapshot(): share the previous snapshot when every value is the identical
 * object (same mapping object: certainly; otherwise compared item by item) */
static int
same_context_values(PyObject *ctx, PyObject *last)
{
    if (context_layout_ok && ((ContextLayout *)ctx)->ctx_vars == ((ContextLayout *)last)->ctx_vars) {
        return 1;
    }
    Py_ssize_t n = PyObject_Size(ctx);
    if (n < 0) {
        return -1;
    }
    Py_ssize_t m = PyObject_Size(last);
    if (m < 0) {
        return -1;
    }
    if (n != m) {
        return 0;
    }
    PyObject *it = PyObject_GetIter(ctx);
    if (it == NULL) {
        return -1;
    }
    int same = 1;
    PyObject *var;
    while (same == 1 && (var = PyIter_Next(it)) != NULL) {
        PyObject *value = PyObject_GetItem(ctx, var);
        PyObject *other = value != NULL ? PyObject_GetItem(last, var) : NULL;
        if (value == NULL) {
            same = -1;
        }
        else if (other == NULL) {
            if (PyErr_ExceptionMatches(PyExc_KeyError)) {
                PyErr_Clear();
                same = 0;
            }
            else {
                same = -1;
            }
        }
        else if (other != value) {
            same = 0;
        }
        Py_XDECREF(value);
        Py_XDECREF(other);
        Py_DECREF(var);
    }
    Py_DECREF(it);
    if (same == 1 && PyErr_Occurred()) {
        return -1;
    }
    return same;
}

static PyObject *
snapshot(PyObject *bus)
{
    PyObject *ctx = PyContext_CopyCurrent();
    if (ctx == NULL) {
        return NULL;
    }
    PyObject *last = fast_get(bus, s_last_ctx);
    if (last == NULL) {
        Py_DECREF(ctx);
        return NULL;
    }
    if (last != Py_None && PyContext_CheckExact(last)) {
        int same = same_context_values(ctx, last);
        if (same < 0) {
            Py_DECREF(ctx);
            Py_DECREF(last);
            return NULL;
        }
        if (same) {
            Py_DECREF(ctx);
            return last;
        }
    }
    Py_DECREF(last);
    if (fast_set(bus, s_last_ctx, ctx) < 0) {
        Py_DECREF(ctx);
        return NULL;
    }
    return ctx;
}

static int
call_method_1(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *args[2] = {obj, arg};
    PyObject *r = PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Dispatcher.dispatch_new + _place_new: admission counter step, then a bare event
 * (after a Context marker when the context changed) into the single open lane's
 * mailbox; any other case goes through the Python _place_new. */
static int
dispatch_new(PyObject *d, PyObject *ev, PyObject *subs, PyObject *ctx)
{
    PyObject *acc = fast_get(d, s_acc);
    if (acc == NULL) {
        return -1;
    }
    if (!PyIter_Check(acc)) {
        PyErr_Format(PyExc_TypeError, "'%.200s' object is not an iterator", Py_TYPE(acc)->tp_name);
        Py_DECREF(acc);
        return -1;
    }
    PyObject *step = PyIter_Next(acc); /* next(self._acc) */
    Py_DECREF(acc);
    if (step == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetNone(PyExc_StopIteration);
        }
        return -1;
    }
    Py_DECREF(step);
    if (PyTuple_CheckExact(subs) && PyTuple_GET_SIZE(subs) == 1) {
        PyObject *sub = PyTuple_GET_ITEM(subs, 0);
        PyObject *lane = fast_get(sub, s_lane);
        if (lane == NULL) {
            return -1;
        }
        int open = 0;
        if (lane != Py_None) {
            open = is_true_attr(sub, s_active);
            if (open == 1) {
                int closing = is_true_attr(lane, s_closing);
                int dead = closing == 0 ? is_true_attr(lane, s_dead) : 0;
                open = closing < 0 || dead < 0 ? -1 : !(closing || dead);
            }
        }
        if (open < 0) {
            Py_DECREF(lane);
            return -1;
        }
        if (open) {
            int rc = -1;
            PyObject *mailbox = fast_get(lane, s_mailbox);
            PyObject *tail = mailbox != NULL ? fast_get(lane, s_tail_ctx) : NULL;
            if (tail == NULL) {
                goto lane_done;
            }
            if (tail != ctx) {
                if (call_method_1(mailbox, s_append, ctx) < 0 ||
                    fast_set(lane, s_tail_ctx, ctx) < 0 || add_to_attr(lane, s_markers, 1) < 0) {
                    goto lane_done;
                }
            }
            if (call_method_1(mailbox, s_append, ev) < 0) { /* bare: see _Lane */
                goto lane_done;
            }
            int idle = is_none_attr(lane, s_waiter);
            if (idle < 0) {
                goto lane_done;
            }
            if (!idle) {
                PyObject *r = PyObject_CallMethodNoArgs(lane, s_wake);
                if (r == NULL) {
                    goto lane_done;
                }
                Py_DECREF(r);
            }
            rc = 0;
        lane_done:
            Py_XDECREF(tail);
            Py_XDECREF(mailbox);
            Py_DECREF(lane);
            return rc;
        }
        Py_DECREF(lane);
    }
    PyObject *args[4] = {d, ev, subs, ctx};
    PyObject *r = PyObject_VectorcallMethod(s_place_new, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Call the Python publish_nowait with the caller's arguments, unchanged */
static PyObject *
forward(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t total = 1 + nargs + nkw;
    PyObject *small[8];
    PyObject **stack = total <= 8 ? small : PyMem_New(PyObject *, total);
    if (stack == NULL) {
        return PyErr_NoMemory();
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
        stack[1 + i] = args[i];
    }
    PyObject *r = PyObject_Vectorcall(py_publish_nowait, stack, 1 + nargs, kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    return r;
}

static int
kw_is(PyObject *name, PyObject *interned)
{
    return name == interned || PyUnicode_Compare(name, interned) == 0;
}

/* var.get(): its value, else its default, else LookupError */
static int
context_var_get(PyObject *var, PyObject **out)
{
    if (PyContextVar_Get(var, NULL, out) < 0) {
        return -1;
    }
    if (*out == NULL) {
        PyErr_SetObject(PyExc_LookupError, var);
        return -1;
    }
    return 0;
}

/* -1 error, 0 declined (forward), 1 hot path applies */
static int
hot_path_applies(PyObject *self, PyObject *d, PyObject *event, PyObject *payload)
{
    if (!PyUnicode_CheckExact(event) || !PyDict_CheckExact(payload) ||
        PyUnicode_GET_LENGTH(event) == 0) {
        return 0;
    }
    PyObject *loop = PyObject_CallNoArgs(running_loop_fn);
    if (loop == NULL) {
        return -1;
    }
    PyObject *quick = fast_get(d, s_quick_loop);
    Py_DECREF(loop); /* only its identity is compared */
    if (quick == NULL) {
        return -1;
    }
    int on_loop = quick == loop;
    Py_DECREF(quick);
    if (!on_loop) {
        return 0;
    }
    int r = is_true_attr(self, s_slow_publish);
    if (r != 0) {
        return r < 0 ? -1 : 0;
    }
    PyObject *schemas = fast_get(self, s_schemas);
    if (schemas == NULL) {
        return -1;
    }
    r = PySequence_Contains(schemas, event);
    Py_DECREF(schemas);
    if (r != 0) {
        return r < 0 ? -1 : 0;
    }
    r = is_none_attr(self, s_tracer); /* a traced envelope: the Python path */
    return r;
}

static PyObject *
sp_publish_nowait(PyObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!Py_IS_TYPE(self, bus_type) || nargs > 2) {
        return forward(self, args, nargs, kwnames);
    }
    PyObject *event = nargs > 0 ? args[0] : NULL;
    PyObject *payload = nargs > 1 ? args[1] : Py_None;
    PyObject *source = Py_None, *correlation_id = Py_None, *causation_id = Py_None;
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            PyObject *value = args[nargs + i];
            if (kw_is(name, s_source)) {
                source = value;
            }
            else if (kw_is(name, s_correlation_id)) {
                correlation_id = value;
            }
            else if (kw_is(name, s_causation_id)) {
                causation_id = value;
            }
            else if (kw_is(name, s_event) && event == NULL) {
                event = value;
            }
            else if (kw_is(name, s_payload) && nargs < 2) {
                payload = value;
            }
            else { /* duplicates, unknown names: the Python method reports them */
                return forward(self, args, nargs, kwnames);
            }
        }
    }
    if (event == NULL) {
        return forward(self, args, nargs, kwnames);
    }
    PyObject *d = fast_get(self, s_dispatcher);
    if (d == NULL) {
        return NULL;
    }
    int applies = hot_path_applies(self, d, event, payload);
    if (applies <= 0) {
        Py_DECREF(d);
        return applies < 0 ? NULL : forward(self, args, nargs, kwnames);
    }
    /* from here on: bus._envelope, the published count, matching and dispatch_new */
    PyObject *parent = NULL, *corr = NULL, *ev = NULL, *subs = NULL, *ctx = NULL;
    PyObject *result = NULL;
    if (context_var_get(current_event_var, &parent) < 0) {
        goto done;
    }
    if (correlation_id == Py_None) {
        if (context_var_get(correlation_var, &corr) < 0) {
            goto done;
        }
        if (corr == Py_None && parent != Py_None) {
            Py_DECREF(corr);
            corr = PyObject_GetAttr(parent, s_correlation_id);
            if (corr == NULL) {
                goto done;
            }
        }
        correlation_id = corr;
    }
    if (causation_id == Py_None && parent != Py_None) {
        PyObject *cause = PyObject_GetAttr(parent, s_event_id);
        if (cause == NULL) {
            goto done;
        }
        ev = build_event(event, payload, source, correlation_id, cause);
        Py_DECREF(cause);
    }
    else {
        ev = build_event(event, payload, source, correlation_id, causation_id);
    }
    if (ev == NULL) {
        goto done;
    }
    /* matched before it is counted: a cache miss checks the type (registry.match) */
    PyObject *registry = fast_get(self, s_registry);
    if (registry == NULL) {
        goto done;
    }
    PyObject *cache = fast_get(registry, s_cache);
    if (cache == NULL) {
        Py_DECREF(registry);
        goto done;
    }
    if (PyDict_CheckExact(cache)) {
        subs = PyDict_GetItemWithError(cache, event);
        Py_XINCREF(subs);
    }
    else {
        PyObject *cargs[2] = {cache, event};
        subs = PyObject_VectorcallMethod(s_get, cargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    Py_DECREF(cache);
    int found = subs != NULL ? PyObject_IsTrue(subs) : (PyErr_Occurred() ? -1 : 0);
    if (found < 0) {
        Py_DECREF(registry);
        goto done;
    }
    if (!found) {
        Py_XDECREF(subs);
        PyObject *margs[2] = {registry, event};
        subs = PyObject_VectorcallMethod(s_match, margs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        found = subs != NULL ? PyObject_IsTrue(subs) : -1;
    }
    Py_DECREF(registry);
    if (found < 0) {
        goto done;
    }
    int plain = is_none_attr(self, s_audit);
    if (plain == 1) {
        plain = is_none_attr(self, s_metrics);
    }
    if (plain < 0) {
        goto done;
    }
    if (plain ? add_to_attr(self, s_published, 1) < 0
              : call_method_1(self, s_count_published, ev) < 0) {
        goto done;
    }
    if (found) {
        ctx = snapshot(self);
        if (ctx == NULL || dispatch_new(d, ev, subs, ctx) < 0) {
            goto done;
        }
    }
    result = Py_NewRef(ev);
done:
    Py_DECREF(d);
    Py_XDECREF(parent);
    Py_XDECREF(corr);
    Py_XDECREF(ev);
    Py_XDECREF(subs);
    Py_XDECREF(ctx);
    return result;
}

static PyMethodDef publish_nowait_def = {
    "publish_nowait", (PyCFunction)(void (*)(void))sp_publish_nowait, METH_FASTCALL | METH_KEYWORDS,
    "publish_nowait($self, event, payload=None, *, source=None, correlation_id=None, "
    "causation_id=None)\n--\n\n"
    "Fire and forget: accept the event and return it (None if dropped).\n\n"
    "Under the BLOCK policy with the bus full, this raises BackpressureError\n"
    "when called from async code (it must not block the loop); use\n"
    "``await bus.publish(..., wait=False)`` there. From a plain thread it waits.\n"
    "(C accelerator; the Python method EventBus._py_publish_nowait is the reference.)",
};

static PyObject *
sp_set_bus(PyObject *self, PyObject *args)
{
    PyObject *cls, *py_method, *loop_fn, *cur_var, *corr_var;
    if (!PyArg_ParseTuple(args, "O!OOO!O!:set_bus", &PyType_Type, &cls, &py_method, &loop_fn,
                          &PyContextVar_Type, &cur_var, &PyContextVar_Type, &corr_var)) {
        return NULL;
    }
    if (!envelope_ready()) {
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(bus_type, (PyTypeObject *)cls);
    Py_INCREF(py_method);
    Py_XSETREF(py_publish_nowait, py_method);
    Py_INCREF(loop_fn);
    Py_XSETREF(running_loop_fn, loop_fn);
    Py_INCREF(cur_var);
    Py_XSETREF(current_event_var, cur_var);
    Py_INCREF(corr_var);
    Py_XSETREF(correlation_var, corr_var);
    context_layout_ok = check_context_layout();
    return PyDescr_NewMethod((PyTypeObject *)cls, &publish_nowait_def);
}

/* ---------------------------------------------------- quick lane (dispatch) */

/* what dispatch.Dispatcher._run_quick reads; configured by set_dispatch */
static PyObject *q_current_event, *q_correlation, *q_await_any, *q_perf;
static PyObject *s_head_ctx, *s_running, *s_concurrency, *s_popleft;

static PyObject *
sp_set_dispatch(PyObject *self, PyObject *args)
{
    PyObject *cur_var, *corr_var, *await_any, *perf, *lane_cls, *sub_cls;
    if (!PyArg_ParseTuple(args, "O!O!OOO!O!:set_dispatch", &PyContextVar_Type, &cur_var,
                          &PyContextVar_Type, &corr_var, &await_any, &perf, &PyType_Type, &lane_cls,
                          &PyType_Type, &sub_cls)) {
        return NULL;
    }
    PyObject *lane_slots[] = {s_closing, s_dead, s_mailbox, s_tail_ctx, s_markers,
                              s_waiter, s_head_ctx, s_running};
    PyObject *sub_slots[] = {s_lane, s_active, s_concurrency};
    if (register_fast(lane_cls, lane_slots, sizeof(lane_slots) / sizeof(lane_slots[0])) < 0 ||
        register_fast(sub_cls, sub_slots, sizeof(sub_slots) / sizeof(sub_slots[0])) < 0) {
        return NULL;
    }
    Py_INCREF(cur_var);
    Py_XSETREF(q_current_event, cur_var);
    Py_INCREF(corr_var);
    Py_XSETREF(q_correlation, corr_var);
    Py_INCREF(await_any);
    Py_XSETREF(q_await_any, await_any);
    Py_INCREF(perf);
    Py_XSETREF(q_perf, perf);
    Py_RETURN_NONE;
}

static int
popleft(PyObject *mailbox)
{
    PyObject *r = PyObject_CallMethodNoArgs(mailbox, s_popleft);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* 1 when the lane may start its head now (_run_quick's guard), 0 not, -1 error */
static int
lane_open(PyObject *lane, PyObject *sub)
{
    PyObject *running = fast_get(lane, s_running);
    if (running == NULL) {
        return -1;
    }
    PyObject *concurrency = fast_get(sub, s_concurrency);
    if (concurrency == NULL) {
        Py_DECREF(running);
        return -1;
    }
    int full = PyObject_RichCompareBool(running, concurrency, Py_GE);
    Py_DECREF(running);
    Py_DECREF(concurrency);
    if (full != 0) {
        return full < 0 ? -1 : 0;
    }
    int closing = is_true_attr(lane, s_closing);
    if (closing != 0) {
        return closing < 0 ? -1 : 0;
    }
    return is_true_attr(sub, s_active);
}

/* The exception being handled, with its traceback attached (what `except` binds) */
static PyObject *
take_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* Step `handler(event)` once in `ctx` as dispatch._enter_async + coro.send(None)
 * do: the current event and correlation id set, the coroutine sent None (no
 * StopIteration object when it returns). PYGEN_RETURN, PYGEN_NEXT (*coro_out and
 * *yielded set) or PYGEN_ERROR (exception set). */
static PySendResult
step_handler(PyObject *ctx, PyObject *handler, PyObject *event, PyObject **coro_out,
             PyObject **yielded)
{
    *coro_out = NULL;
    *yielded = NULL;
    if (PyContext_Enter(ctx) < 0) {
        return PYGEN_ERROR;
    }
    PySendResult status = PYGEN_ERROR;
    PyObject *coro = NULL;
    PyObject *token = PyContextVar_Set(q_current_event, event);
    if (token == NULL) {
        goto exit;
    }
    Py_DECREF(token);
    PyObject *corr = *(PyObject **)((char *)event + field_offset[5]);
    if (corr != NULL && corr != Py_None) {
        token = PyContextVar_Set(q_correlation, corr);
        if (token == NULL) {
            goto exit;
        }
        Py_DECREF(token);
    }
    coro = PyObject_CallOneArg(handler, event);
    if (coro != NULL && !PyCoro_CheckExact(coro)) {
        Py_SETREF(coro, PyObject_CallOneArg(q_await_any, coro));
    }
    if (coro == NULL) {
        goto exit;
    }
    PyObject *result = NULL;
    status = PyIter_Send(coro, Py_None, &result);
    if (status == PYGEN_NEXT) {
        *coro_out = coro;
        *yielded = result;
        coro = NULL;
    }
    else if (status == PYGEN_RETURN) {
        Py_DECREF(result);
    }
exit:
    Py_XDECREF(coro);
    if (PyContext_Exit(ctx) < 0) {
        if (status == PYGEN_NEXT) { /* cannot happen: ctx was entered above */
            Py_CLEAR(*coro_out);
            Py_CLEAR(*yielded);
        }
        return PYGEN_ERROR;
    }
    return status;
}

/* quick_bare(lane, sub, handler, fin, budget) -> (done, leftover)
 *
 * _run_quick's loop for bare fire-and-forget events (no observer, no span): pops
 * context markers and bare events from the head of the lane's mailbox and steps
 * each handler once in a copy of its context; `done` entries were handled. It
 * stops at the budget, an empty mailbox, a head of another kind or a closed lane
 * (leftover None: the Python loop takes that head), or at a handler that did not
 * simply return: leftover is (event, base_ctx, ctx, coro, yielded, start, exc),
 * with the event popped and counted as running, for the Python loop to finish
 * (exc None: the handler suspended; else what it raised). */
static PyObject *
sp_quick_bare(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "quick_bare takes 5 positional arguments");
        return NULL;
    }
    if (q_perf == NULL || event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups: dispatch is not configured");
        return NULL;
    }
    PyObject *lane = args[0], *sub = args[1], *handler = args[2], *fin = args[3];
    if (!PyIter_Check(fin)) {
        PyErr_Format(PyExc_TypeError, "'%.200s' object is not an iterator", Py_TYPE(fin)->tp_name);
        return NULL;
    }
    Py_ssize_t budget = PyLong_AsSsize_t(args[4]);
    if (budget == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *mailbox = fast_get(lane, s_mailbox);
    if (mailbox == NULL) {
        return NULL;
    }
    Py_ssize_t done = 0;
    PyObject *leftover = NULL;
    while (done < budget) {
        Py_ssize_t size = PyObject_Length(mailbox);
        if (size <= 0) {
            if (size < 0) {
                goto error;
            }
            break;
        }
        PyObject *entry = PySequence_GetItem(mailbox, 0);
        if (entry == NULL) {
            goto error;
        }
        if (PyContext_CheckExact(entry)) { /* _Lane.pop_marker */
            int rc = fast_set(lane, s_head_ctx, entry);
            Py_DECREF(entry);
            if (rc < 0 || add_to_attr(lane, s_markers, -1) < 0 || popleft(mailbox) < 0) {
                goto error;
            }
            done++;
            continue;
        }
        if (!Py_IS_TYPE(entry, event_type)) {
            Py_DECREF(entry);
            break;
        }
        int open = lane_open(lane, sub);
        if (open <= 0) {
            Py_DECREF(entry);
            if (open < 0) {
                goto error;
            }
            break;
        }
        PyObject *base = fast_get(lane, s_head_ctx);
        if (base == NULL) {
            Py_DECREF(entry);
            goto error;
        }
        if (!PyContext_CheckExact(base)) {
            Py_DECREF(entry);
            Py_DECREF(base);
            PyErr_SetString(PyExc_RuntimeError, "a bare mailbox event without a context");
            goto error;
        }
        /* counted before popping: lanes_idle() in another thread sees it */
        if (add_to_attr(lane, s_running, 1) < 0 || popleft(mailbox) < 0) {
            Py_DECREF(entry);
            Py_DECREF(base);
            goto error;
        }
        PyObject *ctx = PyContext_Copy(base);
        PyObject *start = ctx != NULL ? PyObject_CallNoArgs(q_perf) : NULL;
        if (start == NULL) {
            Py_XDECREF(ctx);
            Py_DECREF(entry);
            Py_DECREF(base);
            goto error;
        }
        PyObject *coro, *yielded;
        PySendResult status = step_handler(ctx, handler, entry, &coro, &yielded);
        done++;
        if (status == PYGEN_RETURN) {
            Py_DECREF(ctx);
            Py_DECREF(start);
            Py_DECREF(base);
            Py_DECREF(entry);
            PyObject *n = PyIter_Next(fin); /* the release count: a bare event is unbounded */
            if (n == NULL || add_to_attr(lane, s_running, -1) < 0) {
                Py_XDECREF(n);
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_RuntimeError, "the release counter ended");
                }
                goto error;
            }
            Py_DECREF(n);
            continue;
        }
        PyObject *exc = Py_None;
        if (status == PYGEN_ERROR) {
            exc = take_exception();
            if (exc == NULL) {
                exc = Py_NewRef(Py_None);
            }
            coro = Py_NewRef(Py_None);
            yielded = Py_NewRef(Py_None);
        }
        else {
            Py_INCREF(exc);
        }
        leftover = PyTuple_Pack(7, entry, base, ctx, coro, yielded, start, exc);
        Py_DECREF(entry);
        Py_DECREF(base);
        Py_DECREF(ctx);
        Py_DECREF(coro);
        Py_DECREF(yielded);
        Py_DECREF(start);
        Py_DECREF(exc);
        if (leftover == NULL) {
            goto error;
        }
        break;
    }
    Py_DECREF(mailbox);
    PyObject *result = Py_BuildValue("(nO)", done, leftover != NULL ? leftover : Py_None);
    Py_XDECREF(leftover);
    return result;
error:
    Py_DECREF(mailbox);
    Py_XDECREF(leftover);
    return NULL;
}

static int
intern_names(void)
{
#define INTERN(var, text)                                  \
    if ((var = PyUnicode_InternFromString(text)) == NULL) { \
        return -1;                                         \
    }
    INTERN(s_dispatcher, "_dispatcher");
    INTERN(s_quick_loop, "quick_loop");
    INTERN(s_slow_publish, "_slow_publish");
    INTERN(s_schemas, "_schemas");
    INTERN(s_tracer, "tracer");
    INTERN(s_audit, "_audit");
    INTERN(s_metrics, "_metrics");
    INTERN(s_published, "_published");
    INTERN(s_count_published, "_count_published");
    INTERN(s_registry, "_registry");
    INTERN(s_cache, "cache");
    INTERN(s_match, "match");
    INTERN(s_last_ctx, "_last_ctx");
    INTERN(s_acc, "_acc");
    INTERN(s_place_new, "_place_new");
    INTERN(s_lane, "_lane");
    INTERN(s_active, "_active");
    INTERN(s_closing, "closing");
    INTERN(s_dead, "dead");
    INTERN(s_mailbox, "mailbox");
    INTERN(s_tail_ctx, "tail_ctx");
    INTERN(s_markers, "markers");
    INTERN(s_waiter, "waiter");
    INTERN(s_wake, "wake");
    INTERN(s_append, "append");
    INTERN(s_get, "get");
    INTERN(s_event, "event");
    INTERN(s_payload, "payload");
    INTERN(s_source, "source");
    INTERN(s_correlation_id, "correlation_id");
    INTERN(s_causation_id, "causation_id");
    INTERN(s_event_id, "event_id");
    INTERN(s_head_ctx, "head_ctx");
    INTERN(s_running, "running");
    INTERN(s_concurrency, "concurrency");
    INTERN(s_popleft, "popleft");
#undef INTERN
    return 0;
}

/* -------------------------------------------------------------- envelopes */

/* What storage._append._py_envelopes writes: the JSON array of the events'
 * to_jsonl objects, with the keys as constants, the payload through `encoder` (a
 * json c_make_encoder instance refusing NaN), strings escaped like `escape`
 * (json.encoder.encode_basestring) and the timestamp as float.__repr__. Raises
 * (TypeError, ValueError, ...) for anything the twin raises for; the caller then
 * encodes the run another way. The text is built as UTF-8 in one buffer. */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int
buf_put(Buf *b, const char *s, Py_ssize_t n)
{
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) {
            cap *= 2;
        }
        char *grown = PyMem_Realloc(b->data, (size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define BUF_LIT(b, lit) buf_put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static int
buf_str(Buf *b, PyObject *s)
{
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n); /* ASCII: the str's own bytes */
    return utf8 == NULL ? -1 : buf_put(b, utf8, n);
}

/* `s` as a JSON string: quoted as is when it is ASCII without a quote, backslash or
 * control character (what encode_basestring leaves alone), else escape(s) */
static int
env_string(Buf *b, PyObject *s, PyObject *escape)
{
    if (PyUnicode_CheckExact(s) && PyUnicode_IS_ASCII(s)) {
        const char *p = (const char *)PyUnicode_1BYTE_DATA(s);
        Py_ssize_t n = PyUnicode_GET_LENGTH(s);
        Py_ssize_t i = 0;
        while (i < n && (unsigned char)p[i] >= 0x20 && p[i] != '"' && p[i] != '\\') {
            i++;
        }
        if (i == n) {
            return (BUF_LIT(b, "\"") < 0 || buf_put(b, p, n) < 0 || BUF_LIT(b, "\"") < 0) ? -1 : 0;
        }
    }
    PyObject *text = PyObject_CallOneArg(escape, s);
    if (text == NULL) {
        return -1;
    }
    int rc = PyUnicode_Check(text) ? buf_str(b, text) : -1;
    if (rc < 0 && !PyErr_Occurred()) {
        PyErr_SetString(PyExc_TypeError, "escape() must return a str");
    }
    Py_DECREF(text);
    return rc;
}

static const char *const ENV_KEYS[N_FIELDS] = {
    "{\"event_type\":", ",\"payload\":", ",\"timestamp\":", ",\"event_id\":", ",\"source\":",
    ",\"correlation_id\":", ",\"causation_id\":", ",\"traceparent\":", ",\"tracestate\":",
};

static int
env_key(Buf *b, int i)
{
    return buf_put(b, ENV_KEYS[i], (Py_ssize_t)strlen(ENV_KEYS[i]));
}

static int
env_event(Buf *b, PyObject *ev, PyObject *encoder, PyObject *escape, PyObject *zero)
{
#define FIELD(i) (*(PyObject **)((char *)ev + field_offset[i]))
    for (int i = 0; i < N_FIELDS; i++) {
        if (FIELD(i) == NULL) {
            PyErr_Format(PyExc_AttributeError, "Event.%s is not set", FIELD_NAMES[i]);
            return -1;
        }
    }
    PyObject *ts = FIELD(2);
    double t = PyFloat_CheckExact(ts) ? PyFloat_AS_DOUBLE(ts) : NAN;
    if (!isfinite(t)) {
        PyErr_SetString(PyExc_ValueError, "not a finite float timestamp");
        return -1;
    }
    if (env_key(b, 0) < 0 || env_string(b, FIELD(0), escape) < 0 || env_key(b, 1) < 0) {
        return -1;
    }
    PyObject *chunks = PyObject_CallFunctionObjArgs(encoder, FIELD(1), zero, NULL);
    if (chunks == NULL) {
        return -1;
    }
    PyObject *seq = PySequence_Fast(chunks, "the payload encoder must return a sequence");
    Py_DECREF(chunks);
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < m; i++) {
        if (!PyUnicode_Check(items[i]) || buf_str(b, items[i]) < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "the payload encoder must return str chunks");
            }
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    char *repr = PyOS_double_to_string(t, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL) {
        return -1;
    }
    int rc = env_key(b, 2) < 0 || buf_put(b, repr, (Py_ssize_t)strlen(repr)) < 0 ? -1 : 0;
    PyMem_Free(repr);
    if (rc < 0 || env_key(b, 3) < 0 || env_string(b, FIELD(3), escape) < 0) {
        return -1;
    }
    for (int i = 4; i < N_FIELDS; i++) {
        PyObject *v = FIELD(i);
        if (env_key(b, i) < 0 ||
            (v == Py_None ? BUF_LIT(b, "null") : env_string(b, v, escape)) < 0) {
            return -1;
        }
    }
    return BUF_LIT(b, "}");
#undef FIELD
}

static PyObject *
sp_encode_envelopes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode_envelopes(events, encoder, escape)");
        return NULL;
    }
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_event() was not called");
        return NULL;
    }
    PyObject *events = PySequence_Fast(args[0], "events must be a sequence");
    if (events == NULL) {
        return NULL;
    }
    PyObject *zero = PyLong_FromLong(0);
    PyObject *result = NULL;
    Buf b = {NULL, 0, 0};
    if (zero == NULL || BUF_LIT(&b, "[") < 0) {
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(events);
    PyObject **items = PySequence_Fast_ITEMS(events);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ev = items[i];
        if (!PyObject_TypeCheck(ev, event_type)) {
            PyErr_Format(PyExc_TypeError, "not an Event: %.100s", Py_TYPE(ev)->tp_name);
            goto done;
        }
        if ((i > 0 && BUF_LIT(&b, ",") < 0) || env_event(&b, ev, args[1], args[2], zero) < 0) {
            goto done;
        }
    }
    if (BUF_LIT(&b, "]") < 0) {
        goto done;
    }
    result = PyUnicode_DecodeUTF8(b.data, b.len, NULL); /* valid UTF-8: built by buf_str */
done:
    PyMem_Free(b.data);
    Py_XDECREF(zero);
    Py_DECREF(events);
    return result;
}

/* ----------------------------------------------------------------- module */

static PyMethodDef module_methods[] = {
    {"seed_ids", sp_seed_ids, METH_VARARGS,
     "seed_ids(start, node)\n--\n\nSet the shared id counter and the process node."},
    {"event_id_at", sp_event_id_at, METH_O,
     "event_id_at(now, /)\n--\n\nThe evt_ id of an event created at Unix time now."},
    {"new_event_id", sp_new_event_id, METH_NOARGS,
     "new_event_id()\n--\n\nA new evt_ id."},
    {"new_id", sp_new_id, METH_O,
     "new_id(prefix, /)\n--\n\nprefix followed by a unique, time-ordered hex id."},
    {"set_frozen", sp_set_frozen, METH_VARARGS,
     "set_frozen(frozen_dict, fallback)\n--\n\nConfigure payload freezing."},
    {"freeze_payload", sp_freeze_payload, METH_O,
     "freeze_payload(payload, /)\n--\n\nFreeze a publish payload (see _frozen.freeze_payload)."},
    {"set_event", sp_set_event, METH_VARARGS,
     "set_event(event, layout, fallback)\n--\n\nConfigure Event construction."},
    {"make_event", (PyCFunction)(void (*)(void))sp_make_event, METH_FASTCALL | METH_KEYWORDS,
     "make_event(event_type, payload, timestamp, event_id, source=None, correlation_id=None, "
     "causation_id=None, traceparent=None, tracestate=None)\n--\n\n"
     "An Event from already-validated, already-frozen fields."},
    {"build_event", (PyCFunction)(void (*)(void))sp_build_event, METH_FASTCALL,
     "build_event(event_type, payload, source, correlation_id, causation_id, /)\n--\n\n"
     "The non-traced envelope: timestamp, id, frozen payload."},
    {"set_decode", sp_set_decode, METH_VARARGS,
     "set_decode(frozen_list, fallback)\n--\n\nConfigure replay page decoding."},
    {"decode_page", sp_decode_page, METH_O,
     "decode_page(text, /)\n--\n\n"
     "The Events of a replay page's stored bodies (see storage._replay.decode_page)."},
    {"set_bus", sp_set_bus, METH_VARARGS,
     "set_bus(event_bus, py_publish_nowait, get_running_loop, current_event, correlation_id)\n--\n\n"
     "Configure the publish_nowait hot path; returns the method to install on EventBus."},
    {"set_dispatch", sp_set_dispatch, METH_VARARGS,
     "set_dispatch(current_event, correlation_id, await_any, perf_counter, lane, subscription)\n--\n\n"
     "Configure the quick lane loop."},
    {"fast_attributes", sp_fast_attributes, METH_VARARGS,
     "fast_attributes(cls, names)\n--\n\n"
     "Read and write these attributes of exact cls instances without the generic lookup;\n"
     "returns the names taken."},
    {"encode_envelopes", (PyCFunction)(void (*)(void))sp_encode_envelopes, METH_FASTCALL,
     "encode_envelopes(events, encoder, escape, /)\n--\n\n"
     "The JSON array of the events' to_jsonl objects (see storage._append)."},
    {"quick_bare", (PyCFunction)(void (*)(void))sp_quick_bare, METH_FASTCALL,
     "quick_bare(lane, sub, handler, fin, budget, /)\n--\n\n"
     "Run a lane's queued bare events (see dispatch.Dispatcher._run_quick)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aperion_event_bus._speedups",
    .m_doc = "Optional C accelerator; every function has a pure-Python twin.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&CounterType) < 0) {
        return NULL;
    }
    empty_tuple = PyTuple_New(0);
    str_evt = PyUnicode_InternFromString("evt_");
    str_empty = PyUnicode_InternFromString("");
    if (empty_tuple == NULL || str_evt == NULL || str_empty == NULL || intern_names() < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *counter = PyType_GenericNew(&CounterType, empty_tuple, NULL);
    if (counter == NULL || PyModule_AddObject(m, "id_counter", counter) < 0) {
        Py_XDECREF(counter);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
