/*
 * The one place where NFSv4 statuses become errno values.
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stddef.h>

struct status_entry {
    int status;
    int err; /* positive errno */
    const char *name;
};

#define S(st, e) {st, e, #st}
static const struct status_entry status_table[] = {
    S(NFS4_OK, 0),
    S(NFS4ERR_PERM, EPERM),
    S(NFS4ERR_NOENT, ENOENT),
    S(NFS4ERR_IO, EIO),
    S(NFS4ERR_NXIO, ENXIO),
    S(NFS4ERR_ACCESS, EACCES),
    S(NFS4ERR_EXIST, EEXIST),
    S(NFS4ERR_XDEV, EXDEV),
    S(NFS4ERR_NOTDIR, ENOTDIR),
    S(NFS4ERR_ISDIR, EISDIR),
    S(NFS4ERR_INVAL, EINVAL),
    S(NFS4ERR_FBIG, EFBIG),
    S(NFS4ERR_NOSPC, ENOSPC),
    S(NFS4ERR_ROFS, EROFS),
    S(NFS4ERR_MLINK, EMLINK),
    S(NFS4ERR_NAMETOOLONG, ENAMETOOLONG),
    S(NFS4ERR_NOTEMPTY, ENOTEMPTY),
    S(NFS4ERR_DQUOT, EDQUOT),
    S(NFS4ERR_STALE, ESTALE),
    S(NFS4ERR_BADHANDLE, ESTALE),
    S(NFS4ERR_BAD_COOKIE, EINVAL),
    S(NFS4ERR_NOTSUPP, EOPNOTSUPP),
    S(NFS4ERR_TOOSMALL, EINVAL),
    S(NFS4ERR_SERVERFAULT, EREMOTEIO),
    S(NFS4ERR_BADTYPE, EINVAL),
    S(NFS4ERR_DELAY, EAGAIN),
    S(NFS4ERR_SAME, EINVAL),
    S(NFS4ERR_DENIED, EAGAIN),
    S(NFS4ERR_EXPIRED, EIO),
    S(NFS4ERR_LOCKED, EAGAIN),
    S(NFS4ERR_GRACE, EAGAIN),
    S(NFS4ERR_FHEXPIRED, ESTALE),
    S(NFS4ERR_SHARE_DENIED, EACCES),
    S(NFS4ERR_WRONGSEC, EPERM),
    S(NFS4ERR_CLID_INUSE, EIO),
    S(NFS4ERR_RESOURCE, EREMOTEIO),
    S(NFS4ERR_MOVED, EREMOTE),
    S(NFS4ERR_NOFILEHANDLE, EBADF),
    S(NFS4ERR_MINOR_VERS_MISMATCH, EPROTONOSUPPORT),
    S(NFS4ERR_STALE_CLIENTID, EIO),
    S(NFS4ERR_STALE_STATEID, EIO),
    S(NFS4ERR_OLD_STATEID, EIO),
    S(NFS4ERR_BAD_STATEID, EIO),
    S(NFS4ERR_BAD_SEQID, EIO),
    S(NFS4ERR_NOT_SAME, EINVAL),
    S(NFS4ERR_LOCK_RANGE, ENOLCK),
    S(NFS4ERR_SYMLINK, ELOOP),
    S(NFS4ERR_RESTOREFH, EIO),
    S(NFS4ERR_LEASE_MOVED, EIO),
    S(NFS4ERR_ATTRNOTSUPP, EOPNOTSUPP),
    S(NFS4ERR_NO_GRACE, ENOLCK),
    S(NFS4ERR_RECLAIM_BAD, ENOLCK),
    S(NFS4ERR_RECLAIM_CONFLICT, ENOLCK),
    S(NFS4ERR_BADZDR, EIO),
    S(NFS4ERR_LOCKS_HELD, EBUSY),
    S(NFS4ERR_OPENMODE, EBADF),
    S(NFS4ERR_BADOWNER, EINVAL),
    S(NFS4ERR_BADCHAR, EINVAL),
    S(NFS4ERR_BADNAME, EINVAL),
    S(NFS4ERR_BAD_RANGE, EINVAL),
    S(NFS4ERR_LOCK_NOTSUPP, ENOLCK),
    S(NFS4ERR_OP_ILLEGAL, EOPNOTSUPP),
    S(NFS4ERR_DEADLOCK, EDEADLK),
    S(NFS4ERR_FILE_OPEN, EBUSY),
    S(NFS4ERR_ADMIN_REVOKED, EIO),
    S(NFS4ERR_CB_PATH_DOWN, EIO),
};
#undef S

static const struct status_entry *find_status(int status)
{
    for (size_t i = 0; i < sizeof(status_table) / sizeof(status_table[0]); i++)
        if (status_table[i].status == status)
            return &status_table[i];
    return NULL;
}

const char *nc_status_name(int status)
{
    const struct status_entry *e = find_status(status);
    return e ? e->name : NULL;
}

int nc_status_to_errno(int status)
{
    const struct status_entry *e = find_status(status);
    if (e)
        return -e->err;
    /* Log each unknown status once: a flood would hide everything else. */
    static int logged[16];
    static unsigned nlogged;
    for (unsigned i = 0; i < nlogged; i++)
        if (logged[i] == status)
            return -EIO;
    if (nlogged < sizeof(logged) / sizeof(logged[0]))
        logged[nlogged++] = status;
    elog_warn(NC_COMPONENT, "server returned unknown NFS status %d; reporting EIO", status);
    return -EIO;
}
