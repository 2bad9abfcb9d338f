/*
 * Operations that need no open state: attributes, names, directories.
 * Each builds one COMPOUND; replies are decoded by the shape the request
 * was built with (where the GETFH / GETATTRs are).
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * Operations that are not idempotent, when retransmitted after a reconnect,
 * can fail only because their first transmission succeeded and its answer
 * was lost with the connection. Each kind names the failure that can mean
 * that and how to tell (see resent_check).
 */
enum resent_kind {
    RESENT_NONE,
    RESENT_REMOVE, /* NOENT: the name is gone, which is all REMOVE promises */
    RESENT_RENAME, /* NOENT: done if the new name exists */
    RESENT_CREATE, /* EXIST: done if the name is an object of our type (and target) */
    RESENT_LINK,   /* EXIST: done if the name is our file */
};

/* How to read a reply: the op indices of interest (-1 = none). */
struct meta_ctx {
    nc_callback cb;
    void *arg;
    nfs_opnum4 main_op;
    int main_index;    /* the operation whose status is the result */
    int attr_index;    /* GETATTR of the object */
    int dirattr_index; /* GETATTR of the parent directory */
    /* what to verify when a retransmission fails (RESENT_NONE: nothing) */
    enum resent_kind resent;
    struct nc_cred cred;
    struct nc_fh check_dir;
    char *check_name;
    uint32_t check_type;   /* RESENT_CREATE: S_IF* of the object made */
    char *check_target;    /* RESENT_CREATE of a symlink */
    struct nc_fh check_fh; /* RESENT_LINK: the file linked */
    int first_err;         /* the retransmission's own error, if the check fails */
};

static struct meta_ctx *meta_ctx_new(nc_callback cb, void *arg)
{
    struct meta_ctx *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cb = cb;
    m->arg = arg;
    m->main_index = m->attr_index = m->dirattr_index = -1;
    return m;
}

static void meta_ctx_free(struct meta_ctx *m)
{
    if (!m)
        return;
    free(m->check_name);
    free(m->check_target);
    free(m);
}

/* Arms the check of a retransmission of a non-idempotent operation on
 * dir/name. Out of memory only loses the check, not the operation. */
static void meta_set_resent(struct meta_ctx *m, enum resent_kind kind, const struct nc_cred *cred,
                            const struct nc_fh *dir, const char *name)
{
    m->check_name = strdup(name);
    if (!m->check_name)
        return;
    m->resent = kind;
    m->cred = *cred;
    m->check_dir = *dir;
}

static int getattr_at(COMPOUND4res *res, int index, struct nc_attr *attr)
{
    if (index < 0)
        return -1;
    nfs_resop4 *r = nc_res_op(res, (unsigned)index, OP_GETATTR);
    if (!r || r->nfs_resop4_u.opgetattr.status != NFS4_OK)
        return -1;
    return nc_fattr_decode(&r->nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes, attr);
}

/* The status of the operation that matters: later GETATTRs may fail
 * without failing the operation (e.g. REMOVE succeeded but the directory
 * is gone by the time of GETATTR). */
static int main_status(COMPOUND4res *res, int main_index)
{
    if (res->status == NFS4_OK)
        return NFS4_OK;
    if (main_index >= 0 && (unsigned)main_index < res->resarray.resarray_len) {
        /* Every op result begins with its status. */
        nfs_resop4 *r = &res->resarray.resarray_val[main_index];
        int st = *(int *)&r->nfs_resop4_u;
        if (st == NFS4_OK)
            return NFS4_OK;
    }
    return res->status;
}

/* The change_info of the operation at index, which succeeded. */
static void take_dir_change(COMPOUND4res *res, int index, struct nc_reply *reply)
{
    if (index < 0 || (unsigned)index >= res->resarray.resarray_len)
        return;
    nfs_resop4 *r = &res->resarray.resarray_val[index];
    switch (r->resop) {
    case OP_CREATE:
        nc_dir_change_from(&reply->dir_change, &r->nfs_resop4_u.opcreate.CREATE4res_u.resok4.cinfo);
        break;
    case OP_REMOVE:
        nc_dir_change_from(&reply->dir_change, &r->nfs_resop4_u.opremove.REMOVE4res_u.resok4.cinfo);
        break;
    case OP_LINK:
        nc_dir_change_from(&reply->dir_change, &r->nfs_resop4_u.oplink.LINK4res_u.resok4.cinfo);
        break;
    case OP_RENAME:
        nc_dir_change_from(&reply->from_dir_change,
                           &r->nfs_resop4_u.oprename.RENAME4res_u.resok4.source_cinfo);
        nc_dir_change_from(&reply->dir_change,
                           &r->nfs_resop4_u.oprename.RENAME4res_u.resok4.target_cinfo);
        break;
    default:
        break;
    }
}

static const char *resent_name(enum resent_kind kind)
{
    switch (kind) {
    case RESENT_REMOVE:
        return "REMOVE";
    case RESENT_RENAME:
        return "RENAME";
    case RESENT_CREATE:
        return "CREATE";
    case RESENT_LINK:
        return "LINK";
    default:
        return "?";
    }
}

/* The answer to the LOOKUP of resent_check: does the name show that the
 * first transmission did what was asked? */
static void resent_check_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct meta_ctx *m = arg;
    struct nc_reply reply = {0};
    bool done = false;
    if (!err && res->status == NFS4_OK) {
        nc_res_find_fh(res, &reply.fh);
        reply.has_attr = getattr_at(res, 3, &reply.attr) == 0;
        switch (m->resent) {
        case RESENT_RENAME:
            done = true;
            break;
        case RESENT_CREATE:
            done = reply.has_attr && (reply.attr.mode & S_IFMT) == m->check_type;
            if (done && m->check_target) {
                nfs_resop4 *r = nc_res_op(res, 4, OP_READLINK);
                linktext4 *lt = r ? &r->nfs_resop4_u.opreadlink.READLINK4res_u.resok4.link : NULL;
                done = lt && lt->utf8string_len == strlen(m->check_target) &&
                       memcmp(lt->utf8string_val, m->check_target, lt->utf8string_len) == 0;
            }
            break;
        case RESENT_LINK:
            done = reply.fh.len == m->check_fh.len &&
                   memcmp(reply.fh.data, m->check_fh.data, reply.fh.len) == 0;
            break;
        default:
            break;
        }
    }
    if (done) {
        elog_info(NC_COMPONENT,
                  "%s of '%s' resent after a reconnect had been done the first time; "
                  "answering success",
                  resent_name(m->resent), m->check_name);
        if (m->resent == RESENT_RENAME)
            reply = (struct nc_reply){0}; /* rename answers no object */
    } else {
        reply = nc_reply_err(m->first_err);
    }
    m->cb(m->arg, &reply);
    meta_ctx_free(m);
}

/*
 * A retransmitted non-idempotent operation failed with st. Returns true when
 * that is settled here: the answer has been given (REMOVE), or a LOOKUP was
 * sent to find out whether the first transmission succeeded.
 */
static bool resent_check(struct nc_client *c, struct meta_ctx *m, int st)
{
    bool noent = st == NFS4ERR_NOENT;
    bool exist = st == NFS4ERR_EXIST;
    switch (m->resent) {
    case RESENT_REMOVE:
        if (!noent)
            return false;
        elog_info(NC_COMPONENT,
                  "REMOVE of '%s' resent after a reconnect found the name gone; answering "
                  "success",
                  m->check_name);
        struct nc_reply reply = {0};
        m->cb(m->arg, &reply);
        meta_ctx_free(m);
        return true;
    case RESENT_RENAME:
        if (!noent)
            return false;
        break;
    case RESENT_CREATE:
    case RESENT_LINK:
        if (!exist)
            return false;
        break;
    default:
        return false;
    }
    m->first_err = nc_status_to_errno(st);
    struct nc_compound cp;
    nc_compound_init(&cp, "resent-check");
    nc_op_putfh(&cp, &m->check_dir);
    nc_op_lookup(&cp, m->check_name);
    nc_op_getfh(&cp);
    nc_op_getattr(&cp); /* index 3, read by resent_check_done */
    if (m->check_target)
        nc_compound_add(&cp, OP_READLINK); /* index 4 */
    nc_send(c, &m->cred, &cp, resent_check_done, m);
    nc_compound_free(&cp);
    return true;
}

static void meta_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct meta_ctx *m = arg;
    struct nc_reply reply = {0};
    if (err) {
        reply.err = err;
        goto out;
    }
    int st = main_status(res, m->main_index);
    if (st != NFS4_OK && m->resent != RESENT_NONE && nc_rpc_answer_resent(c->rpc) &&
        resent_check(c, m, st))
        return;
    if (st != NFS4_OK) {
        reply.err = nc_status_to_errno(st);
        goto out;
    }
    nc_res_find_fh(res, &reply.fh);
    reply.has_attr = getattr_at(res, m->attr_index, &reply.attr) == 0;
    reply.has_dir_attr = getattr_at(res, m->dirattr_index, &reply.dir_attr) == 0;
    take_dir_change(res, m->main_index, &reply);
out:
    m->cb(m->arg, &reply);
    meta_ctx_free(m);
}

static void send_meta(struct nc_client *c, const struct nc_cred *cred, struct nc_compound *cp,
                      struct meta_ctx *m)
{
    nc_send(c, cred, cp, meta_done, m);
    nc_compound_free(cp);
}

static int current_index(const struct nc_compound *cp)
{
    return (int)cp->args.argarray.argarray_len;
}

#define META_START(cb, arg)                                                                        \
    struct meta_ctx *m = meta_ctx_new(cb, arg);                                                    \
    if (!m) {                                                                                      \
        nc_defer_error(c, cb, arg, -ENOMEM);                                                       \
        return;                                                                                    \
    }                                                                                              \
    struct nc_compound cp

void nc_getattr(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                nc_callback cb, void *arg)
{
    META_START(cb, arg);
    nc_compound_init(&cp, "getattr");
    nc_op_putfh(&cp, fh);
    m->main_index = m->attr_index = current_index(&cp);
    nc_op_getattr(&cp);
    send_meta(c, cred, &cp, m);
}

void nc_lookup(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
               const char *name, nc_callback cb, void *arg)
{
    META_START(cb, arg);
    nc_compound_init(&cp, "lookup");
    nc_op_putfh(&cp, dir);
    m->main_index = current_index(&cp);
    nc_op_lookup(&cp, name);
    nc_op_getfh(&cp);
    m->attr_index = current_index(&cp);
    nc_op_getattr(&cp);
    send_meta(c, cred, &cp, m);
}

void nc_lookup_parent(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
                      nc_callback cb, void *arg)
{
    META_START(cb, arg);
    nc_compound_init(&cp, "lookupp");
    nc_op_putfh(&cp, dir);
    m->main_index = current_index(&cp);
    nc_compound_add(&cp, OP_LOOKUPP);
    nc_op_getfh(&cp);
    m->attr_index = current_index(&cp);
    nc_op_getattr(&cp);
    send_meta(c, cred, &cp, m);
}

void nc_setattr(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                struct nc_open *open, const struct nc_setattr *set, nc_callback cb, void *arg)
{
    META_START(cb, arg);
    nc_compound_init(&cp, "setattr");
    nc_op_putfh(&cp, fh);
    m->main_index = current_index(&cp);
    nfs_argop4 *a = nc_compound_add(&cp, OP_SETATTR);
    /* The anonymous stateid (all zeros) unless a size change needs the
     * writer's open: servers check share reservations for truncation. */
    if (open && !nc_open_dead(c, open))
        a->nfs_argop4_u.opsetattr.stateid = open->stateid;
    nc_fattr_encode(&cp, &a->nfs_argop4_u.opsetattr.obj_attributes, set);
    m->attr_index = current_index(&cp);
    nc_op_getattr(&cp);
    send_meta(c, cred, &cp, m);
}

/* --- operations whose reply needs its own decoding --- */

struct nc_reply_ctx *nc_reply_ctx_new(struct nc_client *c, nc_callback cb, void *arg)
{
    struct nc_reply_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        nc_defer_error(c, cb, arg, -ENOMEM);
        return NULL;
    }
    ctx->cb = cb;
    ctx->arg = arg;
    return ctx;
}

/* --- readlink --- */

static void readlink_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_reply_ctx *ctx = arg;
    struct nc_reply reply = {0};
    char *target = NULL;
    if (err) {
        reply.err = err;
    } else if (res->status != NFS4_OK) {
        reply.err = nc_status_to_errno(res->status);
    } else {
        nfs_resop4 *r = nc_res_op(res, 1, OP_READLINK);
        if (!r) {
            reply.err = -EIO;
        } else {
            linktext4 *lt = &r->nfs_resop4_u.opreadlink.READLINK4res_u.resok4.link;
            target = strndup(lt->utf8string_val ? lt->utf8string_val : "", lt->utf8string_len);
            if (!target)
                reply.err = -ENOMEM;
            reply.target = target;
        }
    }
    ctx->cb(ctx->arg, &reply);
    free(target);
    free(ctx);
}

void nc_readlink(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                 nc_callback cb, void *arg)
{
    struct nc_reply_ctx *ctx = nc_reply_ctx_new(c, cb, arg);
    if (!ctx)
        return;
    struct nc_compound cp;
    nc_compound_init(&cp, "readlink");
    nc_op_putfh(&cp, fh);
    nc_compound_add(&cp, OP_READLINK);
    nc_send(c, cred, &cp, readlink_done, ctx);
    nc_compound_free(&cp);
}

/* --- creating non-regular objects --- */

static uint32_t create_type_mode(nfs_ftype4 type)
{
    switch (type) {
    case NF4DIR:
        return S_IFDIR;
    case NF4LNK:
        return S_IFLNK;
    case NF4FIFO:
        return S_IFIFO;
    case NF4SOCK:
        return S_IFSOCK;
    case NF4CHR:
        return S_IFCHR;
    case NF4BLK:
        return S_IFBLK;
    default:
        return 0;
    }
}

static void create_object(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
                          const char *name, const createtype4 *type, uint32_t mode, nc_callback cb,
                          void *arg)
{
    META_START(cb, arg);
    nc_compound_init(&cp, "create");
    nc_op_putfh(&cp, dir);
    nc_compound_add(&cp, OP_SAVEFH);
    m->main_index = current_index(&cp);
    nfs_argop4 *a = nc_compound_add(&cp, OP_CREATE);
    a->nfs_argop4_u.opcreate.objtype = *type;
    a->nfs_argop4_u.opcreate.objname.utf8string_val = (char *)name;
    a->nfs_argop4_u.opcreate.objname.utf8string_len = (u_int)strlen(name);
    struct nc_setattr set = {.valid = NC_SET_MODE, .mode = mode & 07777};
    nc_fattr_encode(&cp, &a->nfs_argop4_u.opcreate.createattrs, &set);
    nc_op_getfh(&cp);
    m->attr_index = current_index(&cp);
    nc_op_getattr(&cp);
    nc_compound_add(&cp, OP_RESTOREFH);
    m->dirattr_index = current_index(&cp);
    nc_op_getattr(&cp);
    meta_set_resent(m, RESENT_CREATE, cred, dir, name);
    m->check_type = create_type_mode(type->type);
    if (type->type == NF4LNK) {
        const utf8string *t = &type->createtype4_u.linkdata;
        m->check_target = strndup(t->utf8string_val, t->utf8string_len);
        if (!m->check_target)
            m->resent = RESENT_NONE;
    }
    send_meta(c, cred, &cp, m);
}

void nc_mkdir(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
              const char *name, uint32_t mode, nc_callback cb, void *arg)
{
    createtype4 type = {.type = NF4DIR};
    create_object(c, cred, dir, name, &type, mode, cb, arg);
}

void nc_symlink(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
                const char *name, const char *target, nc_callback cb, void *arg)
{
    createtype4 type = {.type = NF4LNK};
    type.createtype4_u.linkdata.utf8string_val = (char *)target;
    type.createtype4_u.linkdata.utf8string_len = (u_int)strlen(target);
    create_object(c, cred, dir, name, &type, 0777, cb, arg);
}

void nc_mknod(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
              const char *name, uint32_t mode, uint32_t rdev_major, uint32_t rdev_minor,
              nc_callback cb, void *arg)
{
    createtype4 type = {0};
    switch (mode & S_IFMT) {
    case S_IFIFO:
        type.type = NF4FIFO;
        break;
    case S_IFSOCK:
        type.type = NF4SOCK;
        break;
    case S_IFCHR:
        type.type = NF4CHR;
        type.createtype4_u.devdata.specdata1 = rdev_major;
        type.createtype4_u.devdata.specdata2 = rdev_minor;
        break;
    case S_IFBLK:
        type.type = NF4BLK;
        type.createtype4_u.devdata.specdata1 = rdev_major;
        type.createtype4_u.devdata.specdata2 = rdev_minor;
        break;
    default:
        nc_defer_error(c, cb, arg, -EINVAL);
        return;
    }
    create_object(c, cred, dir, name, &type, mode, cb, arg);
}

void nc_remove(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
               const char *name, nc_callback cb, void *arg)
{
    META_START(cb, arg);
    nc_compound_init(&cp, "remove");
    nc_op_putfh(&cp, dir);
    m->main_index = current_index(&cp);
    nfs_argop4 *a = nc_compound_add(&cp, OP_REMOVE);
    a->nfs_argop4_u.opremove.target.utf8string_val = (char *)name;
    a->nfs_argop4_u.opremove.target.utf8string_len = (u_int)strlen(name);
    m->dirattr_index = current_index(&cp);
    nc_op_getattr(&cp);
    meta_set_resent(m, RESENT_REMOVE, cred, dir, name);
    send_meta(c, cred, &cp, m);
}

void nc_rename(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *from_dir,
               const char *from_name, const struct nc_fh *to_dir, const char *to_name,
               nc_callback cb, void *arg)
{
    META_START(cb, arg);
    nc_compound_init(&cp, "rename");
    nc_op_putfh(&cp, from_dir);
    nc_compound_add(&cp, OP_SAVEFH);
    nc_op_putfh(&cp, to_dir);
    m->main_index = current_index(&cp);
    nfs_argop4 *a = nc_compound_add(&cp, OP_RENAME);
    a->nfs_argop4_u.oprename.oldname.utf8string_val = (char *)from_name;
    a->nfs_argop4_u.oprename.oldname.utf8string_len = (u_int)strlen(from_name);
    a->nfs_argop4_u.oprename.newname.utf8string_val = (char *)to_name;
    a->nfs_argop4_u.oprename.newname.utf8string_len = (u_int)strlen(to_name);
    m->dirattr_index = current_index(&cp);
    nc_op_getattr(&cp);
    meta_set_resent(m, RESENT_RENAME, cred, to_dir, to_name);
    send_meta(c, cred, &cp, m);
}

void nc_link(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
             const struct nc_fh *dir, const char *name, nc_callback cb, void *arg)
{
    META_START(cb, arg);
    nc_compound_init(&cp, "link");
    nc_op_putfh(&cp, fh);
    nc_compound_add(&cp, OP_SAVEFH);
    nc_op_putfh(&cp, dir);
    m->main_index = current_index(&cp);
    nfs_argop4 *a = nc_compound_add(&cp, OP_LINK);
    a->nfs_argop4_u.oplink.newname.utf8string_val = (char *)name;
    a->nfs_argop4_u.oplink.newname.utf8string_len = (u_int)strlen(name);
    m->dirattr_index = current_index(&cp);
    nc_op_getattr(&cp);
    nc_compound_add(&cp, OP_RESTOREFH);
    m->attr_index = current_index(&cp);
    nc_op_getattr(&cp);
    meta_set_resent(m, RESENT_LINK, cred, dir, name);
    m->check_fh = *fh;
    send_meta(c, cred, &cp, m);
}

/* --- readdir --- */

static void readdir_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_reply_ctx *ctx = arg;
    struct nc_reply reply = {0};
    void *block = NULL;
    if (err) {
        reply.err = err;
        goto out;
    }
    if (res->status != NFS4_OK) {
        reply.err = nc_status_to_errno(res->status);
        goto out;
    }
    nfs_resop4 *r = nc_res_op(res, 1, OP_READDIR);
    if (!r) {
        reply.err = -EIO;
        goto out;
    }
    READDIR4resok *ok = &r->nfs_resop4_u.opreaddir.READDIR4res_u.resok4;
    size_t n = 0, namebytes = 0;
    for (entry4 *e = ok->reply.entries; e; e = e->nextentry) {
        n++;
        namebytes += e->name.utf8string_len + 1;
    }
    /* One block, entries then names, so a caller can keep it whole. */
    block = calloc(1, n * sizeof(struct nc_dirent) + namebytes + 1);
    if (!block) {
        reply.err = -ENOMEM;
        goto out;
    }
    struct nc_dirent *entries = block;
    char *np = (char *)(entries + n);
    size_t i = 0;
    for (entry4 *e = ok->reply.entries; e; e = e->nextentry, i++) {
        struct nc_dirent *d = &entries[i];
        memcpy(np, e->name.utf8string_val, e->name.utf8string_len);
        np[e->name.utf8string_len] = '\0';
        d->name = np;
        np += e->name.utf8string_len + 1;
        d->cookie = e->cookie;
        struct nc_fattr_extra extra;
        if (nc_fattr_decode_extra(&e->attrs, &d->attr, &extra) == 0 && extra.has_fh &&
            extra.rdattr_error == NFS4_OK) {
            d->has_attr = true;
            d->fh = extra.fh;
        }
    }
    reply.entries = entries;
    reply.nentries = (uint32_t)n;
    reply.entries_block = &block;
    reply.eof = ok->reply.eof;
    memcpy(&reply.cookieverf, ok->cookieverf, sizeof(reply.cookieverf));
out:
    ctx->cb(ctx->arg, &reply);
    free(block); /* NULL when the callback took it */
    free(ctx);
}

void *nc_reply_take_entries(const struct nc_reply *reply)
{
    if (!reply->entries_block)
        return NULL;
    void *block = *reply->entries_block;
    *reply->entries_block = NULL;
    return block;
}

void nc_readdir(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
                uint64_t cookie, uint64_t cookieverf, uint32_t maxcount, nc_callback cb, void *arg)
{
    struct nc_reply_ctx *ctx = nc_reply_ctx_new(c, cb, arg);
    if (!ctx)
        return;
    struct nc_compound cp;
    nc_compound_init(&cp, "readdir");
    nc_op_putfh(&cp, dir);
    unsigned idx = cp.args.argarray.argarray_len;
    nfs_argop4 *a = nc_compound_add(&cp, OP_READDIR);
    READDIR4args *ra = &a->nfs_argop4_u.opreaddir;
    ra->cookie = cookie;
    memcpy(ra->cookieverf, &cookieverf, sizeof(ra->cookieverf));
    ra->dircount = maxcount / 4 > 8192 ? maxcount / 4 : 8192;
    ra->maxcount = maxcount;
    cp.bitmaps[idx][0] =
        nc_attr_mask_std[0] | (1u << FATTR4_FILEHANDLE) | (1u << FATTR4_RDATTR_ERROR);
    cp.bitmaps[idx][1] = nc_attr_mask_std[1];
    ra->attr_request.bitmap4_len = 2;
    ra->attr_request.bitmap4_val = cp.bitmaps[idx];
    nc_send(c, cred, &cp, readdir_done, ctx);
    nc_compound_free(&cp);
}

/* --- statfs, access --- */

static void statfs_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_reply_ctx *ctx = arg;
    struct nc_reply reply = {0};
    if (err) {
        reply.err = err;
    } else if (res->status != NFS4_OK) {
        reply.err = nc_status_to_errno(res->status);
    } else {
        nfs_resop4 *r = nc_res_op(res, 1, OP_GETATTR);
        struct nc_fattr_extra extra;
        if (!r ||
            nc_fattr_decode_extra(&r->nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes,
                                  NULL, &extra) != 0)
            reply.err = -EIO;
        else
            reply.statfs = extra.statfs;
        if (!reply.statfs.name_max)
            reply.statfs.name_max = 255;
    }
    ctx->cb(ctx->arg, &reply);
    free(ctx);
}

void nc_statfs(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
               nc_callback cb, void *arg)
{
    struct nc_reply_ctx *ctx = nc_reply_ctx_new(c, cb, arg);
    if (!ctx)
        return;
    struct nc_compound cp;
    nc_compound_init(&cp, "statfs");
    nc_op_putfh(&cp, fh);
    uint32_t mask[2] = {(1u << FATTR4_FILES_AVAIL) | (1u << FATTR4_FILES_FREE) |
                            (1u << FATTR4_FILES_TOTAL) | (1u << FATTR4_MAXNAME),
                        (1u << (FATTR4_SPACE_AVAIL - 32)) | (1u << (FATTR4_SPACE_FREE - 32)) |
                            (1u << (FATTR4_SPACE_TOTAL - 32))};
    nc_op_getattr_mask(&cp, mask);
    nc_send(c, cred, &cp, statfs_done, ctx);
    nc_compound_free(&cp);
}

static void access_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_reply_ctx *ctx = arg;
    struct nc_reply reply = {0};
    if (err) {
        reply.err = err;
    } else if (res->status != NFS4_OK) {
        reply.err = nc_status_to_errno(res->status);
    } else {
        nfs_resop4 *r = nc_res_op(res, 1, OP_ACCESS);
        if (!r)
            reply.err = -EIO;
        else
            reply.access = r->nfs_resop4_u.opaccess.ACCESS4res_u.resok4.access;
    }
    ctx->cb(ctx->arg, &reply);
    free(ctx);
}

void nc_access(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
               uint32_t want, nc_callback cb, void *arg)
{
    struct nc_reply_ctx *ctx = nc_reply_ctx_new(c, cb, arg);
    if (!ctx)
        return;
    struct nc_compound cp;
    nc_compound_init(&cp, "access");
    nc_op_putfh(&cp, fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_ACCESS);
    a->nfs_argop4_u.opaccess.access = want;
    nc_send(c, cred, &cp, access_done, ctx);
    nc_compound_free(&cp);
}
