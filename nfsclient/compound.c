/*
 * Building COMPOUND4args and reading/writing fattr4 values.
 *
 * fattr4 is a bitmap followed by the values of the set bits in bit order, each
 * XDR-encoded; libnfs leaves that encoding to the caller, so it is done here.
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

uint64_t nc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- nc_buf --- */

static void buf_reserve(struct nc_buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap * 2 : 128;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *nd = realloc(b->data, cap);
    if (!nd)
        abort(); /* a few hundred bytes of attributes: nothing sensible to do */
    b->data = nd;
    b->cap = cap;
}

void nc_buf_put_u32(struct nc_buf *b, uint32_t v)
{
    buf_reserve(b, 4);
    unsigned char *p = b->data + b->len;
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    b->len += 4;
}

void nc_buf_put_u64(struct nc_buf *b, uint64_t v)
{
    nc_buf_put_u32(b, (uint32_t)(v >> 32));
    nc_buf_put_u32(b, (uint32_t)v);
}

void nc_buf_put_opaque(struct nc_buf *b, const void *p, uint32_t len)
{
    nc_buf_put_u32(b, len);
    uint32_t padded = (len + 3) & ~3u;
    buf_reserve(b, padded);
    memcpy(b->data + b->len, p, len);
    memset(b->data + b->len + len, 0, padded - len);
    b->len += padded;
}

void nc_buf_free(struct nc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* --- compounds --- */

#define BIT(n) (1u << ((n) % 32))

/* What struct nc_attr is made of. */
const uint32_t nc_attr_mask_std[2] = {
    BIT(FATTR4_TYPE) | BIT(FATTR4_CHANGE) | BIT(FATTR4_SIZE) | BIT(FATTR4_FILEID),
    BIT(FATTR4_MODE) | BIT(FATTR4_NUMLINKS) | BIT(FATTR4_OWNER) | BIT(FATTR4_OWNER_GROUP) |
        BIT(FATTR4_RAWDEV) | BIT(FATTR4_SPACE_USED) | BIT(FATTR4_TIME_ACCESS) |
        BIT(FATTR4_TIME_METADATA) | BIT(FATTR4_TIME_MODIFY),
};

void nc_compound_init(struct nc_compound *cp, const char *tag)
{
    memset(cp, 0, sizeof(*cp));
    cp->args.tag.utf8string_val = (char *)tag;
    cp->args.tag.utf8string_len = (u_int)strlen(tag);
    cp->args.minorversion = 0;
    cp->args.argarray.argarray_val = cp->ops;
}

void nc_compound_free(struct nc_compound *cp)
{
    for (unsigned i = 0; i < cp->nattrbufs; i++)
        nc_buf_free(&cp->attrbufs[i]);
    cp->nattrbufs = 0;
}

nfs_argop4 *nc_compound_add(struct nc_compound *cp, nfs_opnum4 op)
{
    /* Every compound is built by code in this directory with a fixed shape. */
    if (cp->args.argarray.argarray_len >= NC_MAX_OPS)
        abort();
    nfs_argop4 *a = &cp->ops[cp->args.argarray.argarray_len++];
    memset(a, 0, sizeof(*a));
    a->argop = op;
    return a;
}

void nc_op_putfh(struct nc_compound *cp, const struct nc_fh *fh)
{
    nfs_argop4 *a = nc_compound_add(cp, OP_PUTFH);
    a->nfs_argop4_u.opputfh.object.nfs_fh4_len = fh->len;
    a->nfs_argop4_u.opputfh.object.nfs_fh4_val = (char *)fh->data;
}

void nc_op_getfh(struct nc_compound *cp)
{
    nc_compound_add(cp, OP_GETFH);
}

void nc_op_getattr_mask(struct nc_compound *cp, const uint32_t mask[2])
{
    unsigned idx = cp->args.argarray.argarray_len;
    nfs_argop4 *a = nc_compound_add(cp, OP_GETATTR);
    cp->bitmaps[idx][0] = mask[0];
    cp->bitmaps[idx][1] = mask[1];
    a->nfs_argop4_u.opgetattr.attr_request.bitmap4_len = 2;
    a->nfs_argop4_u.opgetattr.attr_request.bitmap4_val = cp->bitmaps[idx];
}

void nc_op_getattr(struct nc_compound *cp)
{
    nc_op_getattr_mask(cp, nc_attr_mask_std);
}

void nc_op_lookup(struct nc_compound *cp, const char *name)
{
    nfs_argop4 *a = nc_compound_add(cp, OP_LOOKUP);
    a->nfs_argop4_u.oplookup.objname.utf8string_val = (char *)name;
    a->nfs_argop4_u.oplookup.objname.utf8string_len = (u_int)strlen(name);
}

static void put_time(struct nc_buf *b, const struct timespec *ts)
{
    nc_buf_put_u64(b, (uint64_t)(int64_t)ts->tv_sec);
    nc_buf_put_u32(b, (uint32_t)ts->tv_nsec);
}

void nc_fattr_encode(struct nc_compound *cp, fattr4 *out, const struct nc_setattr *set)
{
    if (cp->nattrbufs >= sizeof(cp->attrbufs) / sizeof(cp->attrbufs[0]))
        abort();
    unsigned slot = cp->nattrbufs++;
    struct nc_buf *b = &cp->attrbufs[slot];
    uint32_t *mask = cp->attrmasks[slot];
    mask[0] = mask[1] = 0;
    char num[16];
    /* Values in bit order: size(4) mode(33) owner(36) group(37) atime_set(48) mtime_set(54). */
    if (set->valid & NC_SET_SIZE) {
        mask[0] |= BIT(FATTR4_SIZE);
        nc_buf_put_u64(b, set->size);
    }
    if (set->valid & NC_SET_MODE) {
        mask[1] |= BIT(FATTR4_MODE);
        nc_buf_put_u32(b, set->mode & 07777);
    }
    if (set->valid & NC_SET_UID) {
        mask[1] |= BIT(FATTR4_OWNER);
        int n = snprintf(num, sizeof(num), "%u", set->uid);
        nc_buf_put_opaque(b, num, (uint32_t)n);
    }
    if (set->valid & NC_SET_GID) {
        mask[1] |= BIT(FATTR4_OWNER_GROUP);
        int n = snprintf(num, sizeof(num), "%u", set->gid);
        nc_buf_put_opaque(b, num, (uint32_t)n);
    }
    if (set->valid & (NC_SET_ATIME | NC_SET_ATIME_NOW)) {
        mask[1] |= BIT(FATTR4_TIME_ACCESS_SET);
        if (set->valid & NC_SET_ATIME_NOW) {
            nc_buf_put_u32(b, SET_TO_SERVER_TIME4);
        } else {
            nc_buf_put_u32(b, SET_TO_CLIENT_TIME4);
            put_time(b, &set->atime);
        }
    }
    if (set->valid & (NC_SET_MTIME | NC_SET_MTIME_NOW)) {
        mask[1] |= BIT(FATTR4_TIME_MODIFY_SET);
        if (set->valid & NC_SET_MTIME_NOW) {
            nc_buf_put_u32(b, SET_TO_SERVER_TIME4);
        } else {
            nc_buf_put_u32(b, SET_TO_CLIENT_TIME4);
            put_time(b, &set->mtime);
        }
    }
    out->attrmask.bitmap4_len = 2;
    out->attrmask.bitmap4_val = mask;
    out->attr_vals.attrlist4_len = (u_int)b->len;
    out->attr_vals.attrlist4_val = (char *)b->data;
}

/* --- reading fattr4 --- */

struct reader {
    const unsigned char *p;
    size_t left;
    bool bad;
};

static uint32_t rd_u32(struct reader *r)
{
    if (r->left < 4) {
        r->bad = true;
        r->left = 0;
        return 0;
    }
    uint32_t v =
        ((uint32_t)r->p[0] << 24) | ((uint32_t)r->p[1] << 16) | ((uint32_t)r->p[2] << 8) | r->p[3];
    r->p += 4;
    r->left -= 4;
    return v;
}

static uint64_t rd_u64(struct reader *r)
{
    uint64_t hi = rd_u32(r);
    return (hi << 32) | rd_u32(r);
}

/* Returns a pointer to the bytes of an opaque<> / string, and its length. */
static const unsigned char *rd_opaque(struct reader *r, uint32_t *len)
{
    *len = rd_u32(r);
    size_t padded = ((size_t)*len + 3) & ~(size_t)3;
    if (r->bad || r->left < padded) {
        r->bad = true;
        r->left = 0;
        return NULL;
    }
    const unsigned char *p = r->p;
    r->p += padded;
    r->left -= padded;
    return p;
}

static void rd_time(struct reader *r, struct timespec *ts)
{
    ts->tv_sec = (time_t)(int64_t)rd_u64(r);
    ts->tv_nsec = (long)rd_u32(r);
    if (ts->tv_nsec >= 1000000000L)
        ts->tv_nsec = 999999999L;
}

/* NFSv4 names owners by string; EFS and our test server use numbers. */
static uint32_t parse_owner(const unsigned char *p, uint32_t len)
{
    if (!p || len == 0 || len > 10)
        return 65534;
    uint64_t v = 0;
    for (uint32_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 65534; /* "nobody", as the kernel client does for unmappable names */
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    return v > UINT32_MAX ? 65534 : (uint32_t)v;
}

static uint32_t type_to_mode(uint32_t type)
{
    switch (type) {
    case NF4REG:
        return S_IFREG;
    case NF4DIR:
        return S_IFDIR;
    case NF4BLK:
        return S_IFBLK;
    case NF4CHR:
        return S_IFCHR;
    case NF4LNK:
        return S_IFLNK;
    case NF4SOCK:
        return S_IFSOCK;
    case NF4FIFO:
        return S_IFIFO;
    default:
        return S_IFREG;
    }
}

int nc_fattr_decode_extra(const fattr4 *fa, struct nc_attr *attr, struct nc_fattr_extra *extra)
{
    struct reader r = {(const unsigned char *)fa->attr_vals.attrlist4_val,
                       fa->attr_vals.attrlist4_len, false};
    struct nc_attr a = {0};
    struct nc_fattr_extra x = {0};
    uint32_t type = NF4REG;
    uint32_t mode = 0;
    uint32_t len;
    const unsigned char *s;
    for (unsigned word = 0; word < fa->attrmask.bitmap4_len; word++) {
        uint32_t bits = fa->attrmask.bitmap4_val[word];
        for (unsigned bit = 0; bit < 32; bit++) {
            if (!(bits & (1u << bit)))
                continue;
            unsigned attrnum = word * 32 + bit;
            switch (attrnum) {
            case FATTR4_SUPPORTED_ATTRS: {
                uint32_t n = rd_u32(&r);
                for (uint32_t i = 0; i < n && !r.bad; i++)
                    rd_u32(&r);
                break;
            }
            case FATTR4_TYPE:
                type = rd_u32(&r);
                break;
            case FATTR4_FH_EXPIRE_TYPE:
            case FATTR4_LINK_SUPPORT:
            case FATTR4_SYMLINK_SUPPORT:
            case FATTR4_NAMED_ATTR:
            case FATTR4_UNIQUE_HANDLES:
            case FATTR4_ACLSUPPORT:
            case FATTR4_ARCHIVE:
            case FATTR4_CANSETTIME:
            case FATTR4_CASE_INSENSITIVE:
            case FATTR4_CASE_PRESERVING:
            case FATTR4_CHOWN_RESTRICTED:
            case FATTR4_HIDDEN:
            case FATTR4_HOMOGENEOUS:
            case FATTR4_MAXLINK:
            case FATTR4_NO_TRUNC:
            case FATTR4_SYSTEM:
                rd_u32(&r);
                break;
            case FATTR4_CHANGE:
                a.change = rd_u64(&r);
                break;
            case FATTR4_SIZE:
                a.size = rd_u64(&r);
                break;
            case FATTR4_FSID:
                rd_u64(&r);
                rd_u64(&r);
                break;
            case FATTR4_LEASE_TIME:
                x.lease_time = rd_u32(&r);
                break;
            case FATTR4_RDATTR_ERROR:
                x.rdattr_error = rd_u32(&r);
                break;
            case FATTR4_FILEHANDLE:
                s = rd_opaque(&r, &len);
                if (s && len <= NC_FH_MAX) {
                    x.has_fh = true;
                    x.fh.len = len;
                    memcpy(x.fh.data, s, len);
                }
                break;
            case FATTR4_FILEID:
                a.fileid = rd_u64(&r);
                break;
            case FATTR4_FILES_AVAIL:
                x.statfs.files_avail = rd_u64(&r);
                break;
            case FATTR4_FILES_FREE:
                x.statfs.files_free = rd_u64(&r);
                break;
            case FATTR4_FILES_TOTAL:
                x.statfs.files_total = rd_u64(&r);
                break;
            case FATTR4_MAXFILESIZE:
                rd_u64(&r);
                break;
            case FATTR4_MAXNAME:
                x.statfs.name_max = rd_u32(&r);
                break;
            case FATTR4_MAXREAD:
                x.maxread = rd_u64(&r);
                break;
            case FATTR4_MAXWRITE:
                x.maxwrite = rd_u64(&r);
                break;
            case FATTR4_MODE:
                mode = rd_u32(&r) & 07777;
                break;
            case FATTR4_NUMLINKS:
                a.nlink = rd_u32(&r);
                break;
            case FATTR4_OWNER:
                s = rd_opaque(&r, &len);
                a.uid = parse_owner(s, len);
                break;
            case FATTR4_OWNER_GROUP:
                s = rd_opaque(&r, &len);
                a.gid = parse_owner(s, len);
                break;
            case FATTR4_QUOTA_AVAIL_HARD:
            case FATTR4_QUOTA_AVAIL_SOFT:
            case FATTR4_QUOTA_USED:
            case FATTR4_MOUNTED_ON_FILEID:
                rd_u64(&r);
                break;
            case FATTR4_RAWDEV:
                a.rdev_major = rd_u32(&r);
                a.rdev_minor = rd_u32(&r);
                break;
            case FATTR4_SPACE_AVAIL:
                x.statfs.bytes_avail = rd_u64(&r);
                break;
            case FATTR4_SPACE_FREE:
                x.statfs.bytes_free = rd_u64(&r);
                break;
            case FATTR4_SPACE_TOTAL:
                x.statfs.bytes_total = rd_u64(&r);
                break;
            case FATTR4_SPACE_USED:
                a.space_used = rd_u64(&r);
                break;
            case FATTR4_TIME_ACCESS:
                rd_time(&r, &a.atime);
                break;
            case FATTR4_TIME_METADATA:
                rd_time(&r, &a.ctime);
                break;
            case FATTR4_TIME_MODIFY:
                rd_time(&r, &a.mtime);
                break;
            case FATTR4_TIME_BACKUP:
            case FATTR4_TIME_CREATE:
            case FATTR4_TIME_DELTA: {
                struct timespec ignored;
                rd_time(&r, &ignored);
                break;
            }
            default:
                /* An attribute we did not ask for and cannot skip. */
                elog_warn(NC_COMPONENT, "server returned unexpected attribute %u", attrnum);
                return -EIO;
            }
            if (r.bad) {
                elog_warn(NC_COMPONENT, "server returned truncated attributes");
                return -EIO;
            }
        }
    }
    a.mode = type_to_mode(type) | mode;
    if (attr)
        *attr = a;
    if (extra)
        *extra = x;
    return 0;
}

int nc_fattr_decode(const fattr4 *fa, struct nc_attr *out)
{
    return nc_fattr_decode_extra(fa, out, NULL);
}

/* --- results --- */

nfs_resop4 *nc_res_op(COMPOUND4res *res, unsigned i, nfs_opnum4 expect)
{
    if (!res || i >= res->resarray.resarray_len)
        return NULL;
    nfs_resop4 *r = &res->resarray.resarray_val[i];
    return r->resop == expect ? r : NULL;
}

int nc_res_errno(const COMPOUND4res *res)
{
    return nc_status_to_errno(res->status);
}

void nc_fh_from_nfs(struct nc_fh *out, const nfs_fh4 *in)
{
    uint32_t len = in->nfs_fh4_len > NC_FH_MAX ? NC_FH_MAX : in->nfs_fh4_len;
    out->len = len;
    memcpy(out->data, in->nfs_fh4_val, len);
}

int nc_res_find_fh(COMPOUND4res *res, struct nc_fh *fh)
{
    for (unsigned i = 0; i < res->resarray.resarray_len; i++) {
        nfs_resop4 *r = &res->resarray.resarray_val[i];
        if (r->resop == OP_GETFH && r->nfs_resop4_u.opgetfh.status == NFS4_OK) {
            nc_fh_from_nfs(fh, &r->nfs_resop4_u.opgetfh.GETFH4res_u.resok4.object);
            return 0;
        }
    }
    return -EIO;
}

int nc_res_find_attr(COMPOUND4res *res, unsigned start, struct nc_attr *attr)
{
    for (unsigned i = start; i < res->resarray.resarray_len; i++) {
        nfs_resop4 *r = &res->resarray.resarray_val[i];
        if (r->resop == OP_GETATTR && r->nfs_resop4_u.opgetattr.status == NFS4_OK) {
            if (nc_fattr_decode(&r->nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes,
                                attr) != 0)
                return -1;
            return (int)i;
        }
    }
    return -1;
}

void nc_dir_change_from(struct nc_dir_change *out, const change_info4 *ci)
{
    out->valid = true;
    out->atomic = ci->atomic != 0;
    out->before = ci->before;
    out->after = ci->after;
}

bool nc_fh_equal(const struct nc_fh *a, const struct nc_fh *b)
{
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

uint64_t nc_fh_hash(const struct nc_fh *fh)
{
    /* FNV-1a: handles are short and their bytes are well spread. */
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < fh->len; i++) {
        h ^= fh->data[i];
        h *= 1099511628211ull;
    }
    return h;
}
