/*
 * Directory listings: READDIR with attributes (readdirplus), so `ls -l`
 * needs no per-entry GETATTR.
 *
 * The kernel asks for a buffer of entries at a time, resuming at the offset
 * of the last entry it took. Offsets are the server's cookies; NFSv4 never
 * hands out 0, 1 or 2, so "." and ".." take 1 and 2 and 0 is the start. One
 * NFS READDIR fetches more than a kernel buffer holds, so each open
 * directory keeps its last batch and serves the kernel's next calls from
 * it, and reads the following batch ahead as soon as one arrives (READDIR
 * goes cookie by cookie, so the server can only work on the next batch
 * while the kernel takes in this one if we ask before the kernel does). A
 * listing from offset 0 (opendir, rewinddir) always asks the server, so
 * that other clients' new files show at once. The reply to the kernel's
 * next call is built as soon as the last one is sent (struct ahead), so that
 * the kernel and `ls` take in one reply while we build the next.
 *
 * Every entry handed to the kernel except "." and ".." counts a lookup, but
 * only once the kernel has taken the buffer.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DOT_OFFSET 1
#define DOTDOT_OFFSET 2
/* READDIR reply sizes: about twice the kernel's buffer (NFS entries with
 * attributes are larger than FUSE's), within these bounds. */
#define READDIR_BYTES_MIN (128u << 10)
#define READDIR_BYTES_MAX (256u << 10)
/* What a batch of READDIR_BYTES_MAX takes while it is listed: up to ~1,500
 * entries of ~1 KiB each (decoded, batched, and an inode and name each). */
#define READAHEAD_HEAP_BYTES (6 * READDIR_BYTES_MAX)
/* The smallest entry fuse_add_direntry_plus() writes. */
#define DIRENTPLUS_MIN_BYTES 152

/* The entries of one READDIR: those that follow cookie `after`. */
struct batch {
    uint64_t after;
    const struct nc_dirent *entries; /* in block */
    void *block;                     /* the READDIR reply's, taken over */
    unsigned nentries;
    bool eof;
    uint64_t stamp; /* fs_attr_stamp() when its READDIR was sent */
};

struct fetch;

struct dir_handle {
    struct dir_handle *list_next; /* in fs->dirs */
    struct dir_handle *list_prev;
    struct fs_inode *inode;
    uint64_t cookieverf;
    bool has_batch;
    struct batch cur; /* the batch the kernel is being served from */
    /* The batch after cur, read ahead while the kernel takes cur in, so
     * that the server and the kernel work at the same time. */
    bool has_next;
    struct batch next;
    struct fetch *prefetch; /* its READDIR, while in flight */
    bool busy;              /* a READDIR the kernel waits for is in flight */
    bool released;          /* releasedir came while a read-ahead was in flight */
    struct ahead *ahead;    /* the reply to the kernel's expected next call */
    /* Where the last readdirplus reply ended, when the batch to build the
     * next one from was still on its way: the read-ahead builds it. */
    bool ahead_wanted;
    uint64_t ahead_after;
    size_t ahead_size;
};

static void ahead_drop(struct fs *fs, struct dir_handle *dh);

static void batch_clear(struct batch *b)
{
    free(b->block);
    memset(b, 0, sizeof(*b));
}

static void dir_handle_free(struct fs *fs, struct dir_handle *dh)
{
    if (dh->list_prev)
        dh->list_prev->list_next = dh->list_next;
    else
        fs->dirs = dh->list_next;
    if (dh->list_next)
        dh->list_next->list_prev = dh->list_prev;
    ahead_drop(fs, dh);
    batch_clear(&dh->cur);
    batch_clear(&dh->next);
    fs_inode_unref(fs, dh->inode);
    free(dh);
}

void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct dir_handle *dh = calloc(1, sizeof(*dh));
    if (!dh) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    dh->inode = fs_inode_get(fs, ino);
    fs_inode_ref(dh->inode);
    dh->list_next = fs->dirs;
    if (fs->dirs)
        fs->dirs->list_prev = dh;
    fs->dirs = dh;
    fi->fh = (uint64_t)(uintptr_t)dh;
    if (fuse_reply_open(req, fi) != 0)
        dir_handle_free(fs, dh); /* the opener is gone; no releasedir will come */
}

/* At exit, after the drain: no read-ahead is in flight any more (they
 * count as background work), so every handle left can go. */
void fs_dirs_free(struct fs *fs)
{
    while (fs->dirs)
        dir_handle_free(fs, fs->dirs);
}

void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino FS_UNUSED, struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
    if (dh->prefetch)
        dh->released = true; /* its reply frees the handle */
    else
        dir_handle_free(fs, dh);
    fuse_reply_err(req, 0);
}

void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino FS_UNUSED, int datasync FS_UNUSED,
                    struct fuse_file_info *fi FS_UNUSED)
{
    /* NFS directory operations are synchronous on the server already. */
    fuse_reply_err(req, 0);
}

/* A reply under construction. */
struct page {
    bool plus; /* readdirplus: entries carry inodes and attributes */
    char *buf;
    size_t size;
    size_t pos;
    struct fs_inode **placed; /* inodes handed out, to count once delivered */
    size_t nplaced;
    uint64_t last_off; /* the offset of the last entry: where the kernel resumes */
    bool batch_ended;  /* no entry of the batch was left out */
};

/*
 * A readdirplus reply built ahead of the kernel's call for it. A listing's
 * next call resumes where the last reply ended and asks for as much, so the
 * reply to it can be built as soon as the last one is sent: the ~1,400
 * entries of a batch (an inode, a name and attributes each) take efsfuse
 * a few milliseconds, which `ls` otherwise spends waiting in getdents
 * rather than taking in the entries it has. Its inodes hold a reference
 * until it is sent or dropped; it is sent only while each still has the
 * attributes it was built with, from the batch it was built from.
 */
struct ahead {
    struct page page;
    uint64_t after;       /* the offset of the call it answers */
    const void *block;    /* the batch's: cur's once that call is served */
    uint64_t *attr_stamp; /* each placed inode's when built */
};

static bool page_init(struct page *p, size_t size, bool plus)
{
    *p = (struct page){.size = size, .plus = plus};
    p->buf = malloc(size);
    p->placed = calloc(size / DIRENTPLUS_MIN_BYTES + 1, sizeof(*p->placed));
    if (p->buf && p->placed)
        return true;
    free(p->buf);
    free(p->placed);
    return false;
}

/* Adds one entry; false when it does not fit. */
static bool page_add(struct page *p, const char *name, const struct fuse_entry_param *e,
                     uint64_t next_off)
{
    size_t room = p->size - p->pos;
    /* libfuse's fuse_add_direntry*() take a request but use nothing of it;
     * pages built ahead have none. */
    size_t need =
        p->plus ? fuse_add_direntry_plus(NULL, p->buf + p->pos, room, name, e, (off_t)next_off)
                : fuse_add_direntry(NULL, p->buf + p->pos, room, name, &e->attr, (off_t)next_off);
    if (need > p->size - p->pos)
        return false;
    p->pos += need;
    p->last_off = next_off;
    return true;
}

/* "." and "..": no inode handed out, so no lookup counted (ino 0). */
static bool page_add_dot(struct page *p, const char *name, const struct nc_attr *attr,
                         uint64_t next_off)
{
    struct fuse_entry_param e = {0};
    e.attr.st_ino = attr->fileid;
    e.attr.st_mode = attr->mode;
    return page_add(p, name, &e, next_off);
}

/*
 * An entry without an inode (ino 0 tells the kernel so under readdirplus):
 * it shows the name and type, and the kernel looks it up when used. Without
 * attributes the type is unknown and the cookie stands in for the inode
 * number, which must not be 0.
 */
static bool page_add_plain(struct page *p, const struct nc_dirent *de)
{
    struct fuse_entry_param e = {0};
    e.attr.st_mode = de->has_attr ? de->attr.mode & S_IFMT : 0;
    e.attr.st_ino = de->has_attr ? de->attr.fileid : de->cookie;
    return page_add(p, de->name, &e, de->cookie);
}

static bool page_add_entry(struct page *p, struct fs *fs, struct dir_handle *dh,
                           const struct batch *b, const struct nc_dirent *de)
{
    if (!p->plus || !de->has_attr)
        return page_add_plain(p, de);
    struct fs_inode *inode = fs_inode_find_or_add(fs, &de->fh);
    if (!inode)
        return page_add_plain(p, de);
    if (!fs_inode_set_attr(fs, inode, &de->attr, b->stamp) && !inode->attr_valid) {
        /* We changed it after the server listed it and know no better: the
         * kernel keeps its own attributes. */
        fs_inode_put_if_unused(fs, inode);
        return page_add_plain(p, de);
    }
    struct fuse_entry_param e;
    fs_entry_param(fs, inode, &e);
    if (!page_add(p, de->name, &e, de->cookie)) {
        fs_inode_put_if_unused(fs, inode);
        return false;
    }
    fs_inode_add_name(fs, inode, dh->inode, de->name);
    /* Held until the page is sent or dropped: a later entry of the same
     * inode (a hard link) that does not fit would otherwise free it. */
    fs_inode_ref(inode);
    p->placed[p->nplaced++] = inode;
    return true;
}

/* Fills p from batch b, starting after cookie `after`. */
static void page_fill(struct page *p, struct fs *fs, struct dir_handle *dh, const struct batch *b,
                      uint64_t after, bool with_dot, bool with_dotdot)
{
    bool full = false;
    if (with_dot)
        full = !page_add_dot(p, ".", &dh->inode->attr, DOT_OFFSET);
    if (!full && with_dotdot) {
        struct fs_inode *parent = fs_inode_parent(dh->inode);
        const struct nc_attr *a = parent && parent->has_attr ? &parent->attr : &dh->inode->attr;
        full = !page_add_dot(p, "..", a, DOTDOT_OFFSET);
    }
    unsigned i = 0;
    if (after != b->after) {
        while (i < b->nentries && b->entries[i].cookie != after)
            i++;
        i++; /* start after the entry whose cookie the kernel gave back */
    }
    for (; !full && i < b->nentries; i++)
        full = !page_add_entry(p, fs, dh, b, &b->entries[i]);
    p->batch_ended = !full;
}

/* Frees p; its inodes count a lookup if the kernel got them. */
static void page_release(struct fs *fs, struct page *p, bool delivered)
{
    for (size_t k = 0; k < p->nplaced; k++) {
        if (delivered)
            p->placed[k]->nlookup++;
        fs_inode_unref(fs, p->placed[k]); /* frees those the kernel never saw */
    }
    free(p->buf);
    free(p->placed);
}

static bool page_send(fuse_req_t *slot, struct fs *fs, struct page *p)
{
    bool delivered = fs_reply_buf(slot, p->buf, p->pos) == 0;
    page_release(fs, p, delivered);
    return delivered;
}

static void ahead_build(struct fs *fs, struct dir_handle *dh, uint64_t after, size_t size);

/* Sends p, a page of the current batch, and when it is a readdirplus page
 * that the listing goes on past, builds the reply to the next call. */
static void page_send_listing(fuse_req_t *slot, struct fs *fs, struct dir_handle *dh,
                              struct page *p)
{
    uint64_t end = p->last_off;
    size_t size = p->size;
    bool more = p->plus && end > DOTDOT_OFFSET && !(p->batch_ended && dh->cur.eof);
    if (page_send(slot, fs, p) && more)
        ahead_build(fs, dh, end, size);
}

/* Answers from the current batch, starting after cookie `after`. */
static void reply_from_batch(fuse_req_t *slot, struct fs *fs, struct dir_handle *dh, size_t size,
                             uint64_t after, bool with_dot, bool with_dotdot, bool plus)
{
    struct page p;
    if (!page_init(&p, size, plus)) {
        fs_reply_err(slot, -ENOMEM);
        return;
    }
    page_fill(&p, fs, dh, &dh->cur, after, with_dot, with_dotdot);
    page_send_listing(slot, fs, dh, &p);
}

static void ahead_drop(struct fs *fs, struct dir_handle *dh)
{
    struct ahead *a = dh->ahead;
    dh->ahead_wanted = false;
    if (!a)
        return;
    dh->ahead = NULL;
    page_release(fs, &a->page, false);
    free(a->attr_stamp);
    free(a);
}

/* Builds the reply to a call for `size` bytes after `after`, from the
 * batch that holds them: cur, or the read-ahead one after it (or, when
 * that is still on its way, once it arrives). */
static void ahead_build(struct fs *fs, struct dir_handle *dh, uint64_t after, size_t size)
{
    ahead_drop(fs, dh);
    const struct batch *b = &dh->cur;
    if (!dh->has_batch || !b->nentries)
        return;
    if (after != b->entries[b->nentries - 1].cookie) {
        /* cur goes on past `after` */
    } else if (dh->has_next && dh->next.after == after) {
        b = &dh->next;
    } else {
        if (dh->prefetch) { /* the read-ahead checks it fetches `after` */
            dh->ahead_wanted = true;
            dh->ahead_after = after;
            dh->ahead_size = size;
        }
        return;
    }
    struct ahead *a = calloc(1, sizeof(*a));
    if (!a || !page_init(&a->page, size, true)) {
        free(a);
        return; /* only an optimisation */
    }
    page_fill(&a->page, fs, dh, b, after, false, false);
    a->attr_stamp = malloc((a->page.nplaced + 1) * sizeof(*a->attr_stamp));
    if (!a->attr_stamp) {
        page_release(fs, &a->page, false);
        free(a);
        return;
    }
    for (size_t k = 0; k < a->page.nplaced; k++)
        a->attr_stamp[k] = a->page.placed[k]->attr_stamp;
    a->after = after;
    a->block = b->block;
    dh->ahead = a;
}

/* Whether the page built ahead for this call (same offset and size) is what
 * building it now would give. */
static bool ahead_fits(const struct dir_handle *dh)
{
    const struct ahead *a = dh->ahead;
    if (!dh->has_batch || a->block != dh->cur.block)
        return false;
    for (size_t k = 0; k < a->page.nplaced; k++)
        if (a->page.placed[k]->attr_stamp != a->attr_stamp[k])
            return false; /* its attributes changed since */
    return true;
}

/* Does the batch hold what comes after `after`? */
static bool batch_covers(const struct batch *b, uint64_t after)
{
    if (after == b->after)
        return true;
    for (unsigned i = 0; i < b->nentries; i++) {
        if (b->entries[i].cookie == after)
            /* The batch continues past it, or the directory ends there. */
            return i + 1 < b->nentries || b->eof;
    }
    return false;
}

/* What the kernel asked for, kept while the READDIR that answers it runs. */
struct waiter {
    fuse_req_t req;
    size_t size;
    uint64_t after;
    bool with_dot;
    bool with_dotdot;
    bool plus;
};

/* One READDIR in flight: for a waiting kernel request, or read ahead. */
struct fetch {
    struct fs *fs;
    struct dir_handle *dh;
    uint64_t after;
    uint64_t stamp;
    bool read_ahead; /* started without a waiter: counted in fs->background */
    bool has_waiter; /* a kernel request waits for it (it may join a read-ahead) */
    struct waiter w;
};

static void start_fetch(struct fs *fs, struct dir_handle *dh, const struct nc_cred *cred,
                        uint64_t after, uint32_t maxcount, struct fetch *f);

/* Takes a READDIR reply's entries over into b; false when it had none. */
static bool batch_fill(struct batch *b, const struct nc_reply *r, uint64_t after, uint64_t stamp)
{
    b->block = nc_reply_take_entries(r);
    if (!b->block)
        return false;
    b->entries = r->entries;
    b->nentries = r->nentries;
    b->after = after;
    b->eof = r->eof;
    b->stamp = stamp;
    return true;
}

/* Reads ahead the batch after cur, unless one is in hand or on its way. */
static void maybe_prefetch(struct fs *fs, struct dir_handle *dh, const struct nc_cred *cred)
{
    const struct batch *b = &dh->cur;
    if (!dh->has_batch || b->eof || b->nentries == 0 || dh->has_next || dh->prefetch)
        return;
    struct fetch *f = calloc(1, sizeof(*f));
    if (!f)
        return; /* only a read-ahead: the kernel's next call fetches it */
    dh->prefetch = f;
    f->read_ahead = true;
    fs->background++; /* answers no request: exit waits for it (fetch_done) */
    /* A directory big enough to need read-ahead: have the memory its next
     * batch will take populated while the server works on the READDIR. */
    fs_heap_want(fs, READAHEAD_HEAP_BYTES);
    start_fetch(fs, dh, cred, b->entries[b->nentries - 1].cookie, READDIR_BYTES_MAX, f);
}

static void serve(struct fs *fs, struct dir_handle *dh, struct waiter *w)
{
    reply_from_batch(&w->req, fs, dh, w->size, w->after, w->with_dot, w->with_dotdot, w->plus);
}

static void fetch_done(void *arg, const struct nc_reply *r)
{
    struct fetch *f = arg;
    struct fs *fs = f->fs;
    struct dir_handle *dh = f->dh;
    if (dh->prefetch == f)
        dh->prefetch = NULL;
    if (f->read_ahead)
        fs->background--;
    if (!f->has_waiter) {
        /* A read-ahead: kept for the kernel's next call, dropped on error
         * (that call then asks again and gets the error itself). */
        if (dh->released) {
            dir_handle_free(fs, dh);
        } else if (!r->err && batch_fill(&dh->next, r, f->after, f->stamp)) {
            dh->has_next = true;
            dh->cookieverf = r->cookieverf;
            if (dh->ahead_wanted && dh->ahead_after == f->after)
                ahead_build(fs, dh, dh->ahead_after, dh->ahead_size);
        }
        free(f);
        return;
    }
    dh->busy = false;
    if (r->err) {
        fs_reply_err(&f->w.req, r->err);
        goto out;
    }
    struct batch b = {0};
    if (!batch_fill(&b, r, f->after, f->stamp)) {
        fs_reply_err(&f->w.req, -ENOMEM);
        goto out;
    }
    ahead_drop(fs, dh); /* it may point at the batch replaced */
    batch_clear(&dh->cur);
    dh->cur = b;
    dh->has_batch = true;
    dh->cookieverf = r->cookieverf;
    /* Ask for the next batch before the kernel takes this one in. */
    struct nc_cred cred;
    fs_req_cred(fs, f->w.req, &cred);
    maybe_prefetch(fs, dh, &cred);
    serve(fs, dh, &f->w);
out:
    fs_req_assert_answered(f->w.req);
    free(f);
}

static void start_fetch(struct fs *fs, struct dir_handle *dh, const struct nc_cred *cred,
                        uint64_t after, uint32_t maxcount, struct fetch *f)
{
    f->fs = fs;
    f->dh = dh;
    f->after = after;
    f->stamp = fs_attr_stamp(fs);
    nc_readdir(fs->nc, cred, &dh->inode->fh, after, after ? dh->cookieverf : 0, maxcount,
               fetch_done, f);
}

static void read_dir(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi, bool plus)
{
    struct fs *fs = fs_from_req(req);
    struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
    /* Cookies are unsigned 64-bit; the kernel carries them as loff_t. */
    uint64_t pos = (uint64_t)off;
    struct waiter w = {
        .size = size,
        .after = pos <= DOTDOT_OFFSET ? 0 : pos,
        .with_dot = pos == 0,
        .with_dotdot = pos <= DOT_OFFSET,
        .plus = plus,
    };
    struct nc_cred cred;
    fs_req_cred(fs, req, &cred);
    bool ahead_asked = dh->ahead && plus && pos > DOTDOT_OFFSET && dh->ahead->after == pos &&
                       dh->ahead->page.size == size;
    /* A listing from the start always asks the server (see the top). */
    if (pos != 0 && dh->has_batch && !batch_covers(&dh->cur, w.after) && dh->has_next &&
        dh->next.after == w.after) {
        batch_clear(&dh->cur);
        dh->cur = dh->next;
        memset(&dh->next, 0, sizeof(dh->next));
        dh->has_next = false;
        maybe_prefetch(fs, dh, &cred);
    }
    if (ahead_asked && ahead_fits(dh)) {
        struct ahead *a = dh->ahead;
        dh->ahead = NULL;
        fs_req_hold(&w.req, req);
        page_send_listing(&w.req, fs, dh, &a->page);
        free(a->attr_stamp);
        free(a);
        return;
    }
    ahead_drop(fs, dh); /* not for this call, or stale: it goes */
    if (pos != 0 && dh->has_batch && batch_covers(&dh->cur, w.after)) {
        fs_req_hold(&w.req, req);
        serve(fs, dh, &w);
        return;
    }
    if (dh->busy) {
        fuse_reply_err(req, EBUSY);
        return;
    }
    if (pos != 0 && dh->prefetch && dh->prefetch->after == w.after) {
        /* What the read-ahead is fetching: wait for it rather than ask twice. */
        fs_req_hold(&w.req, req);
        dh->prefetch->has_waiter = true;
        dh->prefetch->w = w;
        dh->busy = true;
        return;
    }
    struct fetch *f = calloc(1, sizeof(*f));
    if (!f) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fs_req_hold(&w.req, req);
    f->has_waiter = true;
    f->w = w;
    dh->busy = true;
    /* A read-ahead that is no longer what comes next is dropped. */
    if (dh->has_next) {
        batch_clear(&dh->next);
        dh->has_next = false;
    }
    /* The start of a listing comes in a small batch, so that the kernel
     * gets to work at once while the bigger read-ahead batches follow. */
    size_t want = w.after == 0 ? READDIR_BYTES_MIN : size * 2;
    uint32_t maxcount = want < READDIR_BYTES_MIN   ? READDIR_BYTES_MIN
                        : want > READDIR_BYTES_MAX ? READDIR_BYTES_MAX
                                                   : (uint32_t)want;
    start_fetch(fs, dh, &cred, w.after, maxcount, f);
}

void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino FS_UNUSED, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    read_dir(req, size, off, fi, true);
}

/* For kernels that do not offer readdirplus. */
void fs_op_readdir(fuse_req_t req, fuse_ino_t ino FS_UNUSED, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
    read_dir(req, size, off, fi, false);
}
