/* memsnap._smaps: the optional native scan of a maps or smaps text (owned by memsnap.parse).
 *
 * scan(text, keys, max_path, max_kib) reads the kernel's bytes once, without making a
 * Python object per line, and returns the columns memsnap.parse's column parser builds:
 *
 *     (stride, starts, ends, perms, offsets, devs, inodes, raw_paths, sizes, vm_flags)
 *
 * `sizes` holds one list per key of `keys` (in bytes; None when the blocks lack that
 * key) and `vm_flags` is None when the blocks have no VmFlags line.  It returns None
 * whenever the text is anything but the regular shape a kernel prints, and then the
 * Python parsers take over unchanged (the line parser names a bad line; this scanner
 * never has to).  "Regular" is deliberately narrower than what the Python column parser
 * accepts, so that every text scanned here gets the same answer from every Python path:
 *
 * - trailing whitespace-only lines are dropped; any other empty line refuses;
 * - every line is a header (the exact shape of parse._HEADER_PATTERN) or a field line
 *   `Key:` ([A-Za-z0-9_]+, then a space, a tab or the end of the line);
 * - every block has the first block's field lines, keys in the same order; a kept key
 *   or VmFlags twice in a block refuses;
 * - a kept key's value is [ \t]+ digits{1,16} " kB" [ \t]*, at most max_kib KiB;
 * - a VmFlags value is printable ASCII (spaces stripped at both ends);
 * - start <= end, an inode below 2**64, a path of at most max_path bytes, not "[rollup]",
 *   not ending in a CR.
 *
 * The running totals (Sums) and the paths' decoding stay in Python: they are a handful
 * of C-level calls over whole columns there.
 *
 * read_all(fd) reads an open file to its end (owned by memsnap.capture.procfs).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define MAX_KEYS 64

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

/* What one field line of the first block is. */
enum { IGNORED = -1, VMFLAGS = -2 };

static int is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned hex_value(char c) {
    if (c <= '9') return (unsigned)(c - '0');
    if (c >= 'a') return (unsigned)(c - 'a' + 10);
    return (unsigned)(c - 'A' + 10);
}

static int is_key_char(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '_';
}

/* ASCII whitespace as bytes.strip() knows it. */
static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* 1 to `most` hex digits at *i, stopping at the first other byte. */
static int read_hex(span line, Py_ssize_t *i, int most, uint64_t *out) {
    Py_ssize_t at = *i;
    uint64_t v = 0;
    while (at < line.n && is_hex(line.p[at])) {
        if (at - *i == most) return 0;
        v = (v << 4) | hex_value(line.p[at]);
        at++;
    }
    if (at == *i) return 0;
    *out = v;
    *i = at;
    return 1;
}

static int expect(span line, Py_ssize_t *i, char c) {
    if (*i >= line.n || line.p[*i] != c) return 0;
    (*i)++;
    return 1;
}

typedef struct {
    uint64_t start, end, offset, inode;
    int perms; /* r w x bits, then p/s: an index into the perms cache */
    span dev;  /* as printed; lower-cased when it is made a str */
    span path; /* everything after the padding; empty when there is none */
} header;

/* The header line's fields, or 0 when it is not exactly parse._HEADER_PATTERN (or is
 * out of the bounds the Python column parser checks). */
static int read_header(span line, Py_ssize_t max_path, header *h) {
    Py_ssize_t i = 0, digits;
    if (!read_hex(line, &i, 16, &h->start) || !expect(line, &i, '-')) return 0;
    if (!read_hex(line, &i, 16, &h->end) || !expect(line, &i, ' ')) return 0;
    if (i + 5 > line.n) return 0;
    const char *pm = line.p + i;
    if ((pm[0] != 'r' && pm[0] != '-') || (pm[1] != 'w' && pm[1] != '-') ||
        (pm[2] != 'x' && pm[2] != '-') || (pm[3] != 'p' && pm[3] != 's') || pm[4] != ' ')
        return 0;
    h->perms = (pm[0] == 'r') << 3 | (pm[1] == 'w') << 2 | (pm[2] == 'x') << 1 | (pm[3] == 's');
    i += 5;
    if (!read_hex(line, &i, 16, &h->offset) || !expect(line, &i, ' ')) return 0;
    Py_ssize_t dev_at = i;
    uint64_t ignored;
    if (!read_hex(line, &i, 8, &ignored) || !expect(line, &i, ':')) return 0;
    if (!read_hex(line, &i, 8, &ignored)) return 0;
    h->dev.p = line.p + dev_at;
    h->dev.n = i - dev_at;
    if (!expect(line, &i, ' ')) return 0;
    while (i < line.n && line.p[i] == ' ') i++;
    uint64_t inode = 0;
    for (digits = 0; i < line.n && line.p[i] >= '0' && line.p[i] <= '9'; digits++, i++) {
        unsigned d = (unsigned)(line.p[i] - '0');
        if (digits == 20 || inode > (UINT64_MAX - d) / 10) return 0; /* >= 2**64 */
        inode = inode * 10 + d;
    }
    if (digits == 0) return 0;
    h->inode = inode;
    h->path.p = line.p + line.n;
    h->path.n = 0;
    if (i < line.n) {
        if (line.p[i] != ' ' && line.p[i] != '\t') return 0;
        while (i < line.n && (line.p[i] == ' ' || line.p[i] == '\t')) i++;
        h->path.p = line.p + i;
        h->path.n = line.n - i;
    }
    if (h->start > h->end || h->path.n > max_path) return 0;
    if (h->path.n == 8 && memcmp(h->path.p, "[rollup]", 8) == 0) return 0;
    /* A saved text's line parser reads a CR that ends a line as part of its line end. */
    if (h->path.n > 0 && h->path.p[h->path.n - 1] == '\r') return 0;
    return 1;
}

/* The length of a field line's key (the bytes before its colon), or 0 when the line is
 * not `Key:` followed by a space, a tab or its end. */
static Py_ssize_t field_key(span line) {
    Py_ssize_t i = 0;
    while (i < line.n && is_key_char(line.p[i])) i++;
    if (i == 0 || i >= line.n || line.p[i] != ':') return 0;
    if (i + 1 < line.n && line.p[i + 1] != ' ' && line.p[i + 1] != '\t') return 0;
    return i;
}

/* A kept key's value after `Key:`: its number of KiB, or -1. */
static int64_t size_kib(span line, Py_ssize_t i, uint64_t max_kib) {
    Py_ssize_t at = i;
    while (i < line.n && (line.p[i] == ' ' || line.p[i] == '\t')) i++;
    if (i == at) return -1;
    uint64_t v = 0;
    Py_ssize_t first = i;
    while (i < line.n && line.p[i] >= '0' && line.p[i] <= '9') {
        if (i - first == 16) return -1;
        v = v * 10 + (uint64_t)(line.p[i] - '0');
        i++;
    }
    if (i == first || v > max_kib) return -1;
    if (i + 3 > line.n || memcmp(line.p + i, " kB", 3) != 0) return -1;
    for (i += 3; i < line.n; i++)
        if (line.p[i] != ' ' && line.p[i] != '\t') return -1;
    return (int64_t)v;
}

/* The next line of the text from *pos (which moves past its newline). */
static span next_line(const char *text, Py_ssize_t size, Py_ssize_t *pos) {
    span line = {text + *pos, 0};
    const char *nl = memchr(line.p, '\n', (size_t)(size - *pos));
    line.n = nl ? nl - line.p : size - *pos;
    *pos += line.n + 1;
    return line;
}

/* The columns as they grow: an array of new references per column (NULL where nothing
 * was stored yet: a block given up half-way leaves some), made lists at the end. */
enum { START, END, PERMS, OFFSET, DEV, INODE, PATH, FLAGS, SIZES };
#define MAX_COLUMNS (SIZES + MAX_KEYS)

typedef struct {
    PyObject **col[MAX_COLUMNS]; /* NULL for a column no block has */
    int wanted[MAX_COLUMNS];
    Py_ssize_t ncols, cap;
    PyObject *perm_str[16];
} columns;

static void release(columns *c) {
    for (Py_ssize_t k = 0; k < c->ncols; k++) {
        if (c->col[k] == NULL) continue;
        for (Py_ssize_t i = 0; i < c->cap; i++) Py_XDECREF(c->col[k][i]);
        PyMem_Free(c->col[k]);
    }
    for (int k = 0; k < 16; k++) Py_XDECREF(c->perm_str[k]);
}

/* Room for at least `rows` rows in every wanted column; 0 (MemoryError set) if not. */
static int grow(columns *c, Py_ssize_t rows) {
    Py_ssize_t cap = c->cap > 0 ? c->cap : 16;
    while (cap < rows) cap *= 2;
    if (cap == c->cap) return 1;
    for (Py_ssize_t k = 0; k < c->ncols; k++) {
        if (!c->wanted[k]) continue;
        PyObject **items = PyMem_Realloc(c->col[k], (size_t)cap * sizeof(PyObject *));
        if (items == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        memset(items + c->cap, 0, (size_t)(cap - c->cap) * sizeof(PyObject *));
        c->col[k] = items;
    }
    c->cap = cap;
    return 1;
}

/* A column's first `n` items as a list, which takes their references over. */
static PyObject *as_list(PyObject **items, Py_ssize_t n) {
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyList_SET_ITEM(list, i, items[i]);
        items[i] = NULL;
    }
    return list;
}

/* The same object again when a column repeats its previous value (most do): one
 * reference more instead of a new object. */
typedef struct {
    PyObject *obj; /* borrowed from the list it was stored in */
    span raw;
    int64_t number;
} last;

static PyObject *again(last *l, span raw) {
    if (l->obj != NULL && l->raw.n == raw.n && memcmp(l->raw.p, raw.p, (size_t)raw.n) == 0) {
        Py_INCREF(l->obj);
        return l->obj;
    }
    return NULL;
}

static PyObject *perm_text(columns *c, int bits) {
    if (c->perm_str[bits] == NULL) {
        char text[4] = {bits & 8 ? 'r' : '-', bits & 4 ? 'w' : '-', bits & 2 ? 'x' : '-',
                        bits & 1 ? 's' : 'p'};
        c->perm_str[bits] = PyUnicode_FromStringAndSize(text, 4);
        if (c->perm_str[bits] == NULL) return NULL;
    }
    Py_INCREF(c->perm_str[bits]);
    return c->perm_str[bits];
}

static PyObject *dev_text(span dev) {
    char lower[17 + 1];
    for (Py_ssize_t i = 0; i < dev.n; i++) {
        char ch = dev.p[i];
        lower[i] = (ch >= 'A' && ch <= 'F') ? (char)(ch - 'A' + 'a') : ch;
    }
    return PyUnicode_FromStringAndSize(lower, dev.n);
}

/* A VmFlags value: printable ASCII, spaces stripped at both ends; NULL with no error
 * set when it is anything else. */
static PyObject *flags_text(span v) {
    for (Py_ssize_t i = 0; i < v.n; i++)
        if (v.p[i] < 0x20 || v.p[i] > 0x7e) return NULL;
    while (v.n > 0 && v.p[0] == ' ') v.p++, v.n--;
    while (v.n > 0 && v.p[v.n - 1] == ' ') v.n--;
    return PyUnicode_FromStringAndSize(v.p, v.n);
}

static PyObject *scan(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer buffer;
    PyObject *keys;
    Py_ssize_t max_path;
    unsigned long long max_kib;
    if (!PyArg_ParseTuple(args, "y*O!nK", &buffer, &PyTuple_Type, &keys, &max_path, &max_kib))
        return NULL;
    columns c;
    memset(&c, 0, sizeof c);
    PyObject *result = NULL;
    Py_ssize_t nkeys = PyTuple_GET_SIZE(keys);
    if (nkeys > MAX_KEYS) {
        PyErr_SetString(PyExc_ValueError, "too many keys");
        goto done;
    }
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(keys, k))) {
            PyErr_SetString(PyExc_TypeError, "keys must be bytes");
            goto done;
        }
    }
    const char *text = buffer.buf;
    Py_ssize_t size = buffer.len;
    /* Drop the trailing lines that are only whitespace (parse_text does the same). */
    Py_ssize_t tail = size;
    while (tail > 0 && is_space(text[tail - 1])) tail--;
    if (tail > 0) {
        const char *nl = memchr(text + tail, '\n', (size_t)(size - tail));
        size = nl ? nl - text : size;
    } else {
        size = 0;
    }
    c.ncols = SIZES + nkeys;
    for (Py_ssize_t k = 0; k < SIZES - 1; k++) c.wanted[k] = 1; /* the header's, not FLAGS */

    /* The first block: its header, then its field lines up to the next header. */
    Py_ssize_t stride = 0, count = 0, pos = 0;
    int role[1 + 256];
    span key_of[1 + 256];
    if (size > 0) {
        header h;
        if (!read_header(next_line(text, size, &pos), max_path, &h)) goto irregular;
        stride = 1;
        while (pos <= size) {
            Py_ssize_t at = pos;
            span line = next_line(text, size, &pos);
            Py_ssize_t n = field_key(line);
            if (n == 0) {
                if (read_header(line, max_path, &h)) {
                    pos = at;
                    break;
                }
                goto irregular;
            }
            if (stride > 256) goto irregular; /* no kernel prints such a block */
            key_of[stride].p = line.p;
            key_of[stride].n = n;
            role[stride] = IGNORED;
            if (n == 7 && memcmp(line.p, "VmFlags", 7) == 0) {
                if (c.wanted[FLAGS]++) goto irregular;
                role[stride] = VMFLAGS;
            }
            for (Py_ssize_t k = 0; k < nkeys; k++) {
                PyObject *key = PyTuple_GET_ITEM(keys, k);
                if (PyBytes_GET_SIZE(key) == n && memcmp(PyBytes_AS_STRING(key), line.p, n) == 0) {
                    if (c.wanted[SIZES + k]++) goto irregular;
                    role[stride] = (int)k;
                }
            }
            stride++;
        }
        /* Room for as many blocks as the first one's length says, and some, but no
         * more than a process has by default (65,530): a hostile text with a short first
         * block must not reserve memory for millions of rows it may never have. */
        Py_ssize_t guess = size / (pos < size ? pos : size) + 1;
        if (!grow(&c, guess < 60000 ? guess + guess / 8 : 66000)) goto done;
    }

    last dev_last = {0}, path_last = {0}, flags_last = {0}, size_last[MAX_KEYS];
    memset(size_last, 0, sizeof size_last);
    pos = 0;
    for (Py_ssize_t b = 0; pos <= size && size > 0; b++, count++) {
        if (b == c.cap && !grow(&c, b + 1)) goto done;
        header h;
        if (!read_header(next_line(text, size, &pos), max_path, &h)) goto irregular;
        PyObject *v;
        if ((c.col[START][b] = PyLong_FromUnsignedLongLong(h.start)) == NULL ||
            (c.col[END][b] = PyLong_FromUnsignedLongLong(h.end)) == NULL ||
            (c.col[OFFSET][b] = PyLong_FromUnsignedLongLong(h.offset)) == NULL ||
            (c.col[INODE][b] = PyLong_FromUnsignedLongLong(h.inode)) == NULL ||
            (c.col[PERMS][b] = perm_text(&c, h.perms)) == NULL)
            goto done;
        if ((v = again(&dev_last, h.dev)) == NULL) {
            if ((v = dev_text(h.dev)) == NULL) goto done;
            dev_last.obj = v, dev_last.raw = h.dev;
        }
        c.col[DEV][b] = v;
        if ((v = again(&path_last, h.path)) == NULL) {
            if ((v = PyBytes_FromStringAndSize(h.path.p, h.path.n)) == NULL) goto done;
            path_last.obj = v, path_last.raw = h.path;
        }
        c.col[PATH][b] = v;
        for (Py_ssize_t j = 1; j < stride; j++) {
            if (pos > size) goto irregular; /* the text ends inside a block */
            span line = next_line(text, size, &pos);
            span key = key_of[j];
            /* The first block's key, then its colon and a space, a tab or the end. */
            if (line.n <= key.n || memcmp(line.p, key.p, (size_t)key.n) != 0 ||
                line.p[key.n] != ':')
                goto irregular;
            if (line.n > key.n + 1 && line.p[key.n + 1] != ' ' && line.p[key.n + 1] != '\t')
                goto irregular;
            if (role[j] == IGNORED) continue;
            span value = {line.p + key.n + 1, line.n - key.n - 1};
            if (role[j] == VMFLAGS) {
                if ((v = again(&flags_last, value)) == NULL) {
                    if ((v = flags_text(value)) == NULL) {
                        if (PyErr_Occurred()) goto done;
                        goto irregular;
                    }
                    flags_last.obj = v, flags_last.raw = value;
                }
                c.col[FLAGS][b] = v;
                continue;
            }
            int64_t kib = size_kib(line, key.n + 1, max_kib);
            if (kib < 0) goto irregular;
            last *l = &size_last[role[j]];
            if (l->obj != NULL && l->number == kib) {
                v = l->obj;
                Py_INCREF(v);
            } else {
                if ((v = PyLong_FromLongLong(kib * 1024)) == NULL) goto done;
                l->obj = v, l->number = kib;
            }
            c.col[SIZES + role[j]][b] = v;
        }
    }

    /* The answer: each column a list (or None: a key no block has), sizes in a tuple. */
    PyObject *lists[MAX_COLUMNS] = {NULL};
    for (Py_ssize_t k = 0; k < c.ncols; k++) {
        if (!c.wanted[k] && k >= SIZES - 1 && size > 0) {
            lists[k] = Py_None;
            Py_INCREF(Py_None);
        } else if ((lists[k] = c.col[k] ? as_list(c.col[k], count) : PyList_New(0)) == NULL) {
            goto lists_done;
        }
    }
    PyObject *sizes = PyTuple_New(nkeys);
    if (sizes == NULL) goto lists_done;
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyTuple_SET_ITEM(sizes, k, lists[SIZES + k]);
        lists[SIZES + k] = NULL;
    }
    PyObject *stride_obj = PyLong_FromSsize_t(stride);
    if (stride_obj == NULL || (result = PyTuple_New(10)) == NULL) {
        Py_XDECREF(stride_obj);
        Py_DECREF(sizes);
        goto lists_done;
    }
    PyObject *items[10] = {stride_obj,   lists[START], lists[END],  lists[PERMS], lists[OFFSET],
                           lists[DEV],   lists[INODE], lists[PATH], sizes,        lists[FLAGS]};
    for (Py_ssize_t k = 0; k < 10; k++) PyTuple_SET_ITEM(result, k, items[k]);
    for (Py_ssize_t k = 0; k < SIZES; k++) lists[k] = NULL;
lists_done:
    for (Py_ssize_t k = 0; k < c.ncols; k++) Py_XDECREF(lists[k]);
    goto done;

irregular:
    result = Py_None;
    Py_INCREF(result);
done:
    release(&c);
    PyBuffer_Release(&buffer);
    return result;
}

/* read_all(fd) -> bytes: the rest of an open file, read to its end.
 *
 * The kernel writes a /proc maps or smaps text a page or so per read(), however much is
 * asked for, so a big smaps takes thousands of calls. A Python loop takes the
 * interpreter lock back after each one, and while another thread runs Python that means
 * waiting for it every time; here the lock is let go once per buffer, so a thread
 * reading a smaps runs beside the one importing or parsing. Errors are raised as
 * OSError with the call's errno (ENOENT, EACCES, ESRCH ... as FileIO.readall would). An
 * interrupted call checks for signals (Ctrl-C) and goes on, as Python's own I/O does. */
static PyObject *read_all(PyObject *self, PyObject *args) {
    (void)self;
    int fd;
    if (!PyArg_ParseTuple(args, "i:read_all", &fd)) return NULL;
    Py_ssize_t size = 1 << 16, used = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    for (;;) {
        ssize_t n = 0;
        int failed = 0;
        char *buf = PyBytes_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        while (used < size) {
            n = read(fd, buf + used, (size_t)(size - used));
            if (n <= 0) {
                failed = n < 0 ? errno : 0;
                break;
            }
            used += n;
        }
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (failed == EINTR) {
                if (PyErr_CheckSignals() < 0) goto fail;
                continue;
            }
            errno = failed;
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        if (n == 0) break; /* the end of the file */
        if (size > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            goto fail;
        }
        size *= 2;
        if (_PyBytes_Resize(&out, size) < 0) return NULL;
    }
    if (_PyBytes_Resize(&out, used) < 0) return NULL;
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(text, keys, max_path, max_kib) -> columns, or None when the text is irregular"},
    {"read_all", read_all, METH_VARARGS,
     "read_all(fd) -> bytes: the rest of an open file, read without the interpreter lock"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "memsnap._smaps",
    "The native scan of a maps or smaps text (see memsnap.parse), and a whole-file read.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__smaps(void) { return PyModule_Create(&module); }
