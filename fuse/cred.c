/*
 * The credentials a request is sent with: AUTH_SYS carries the caller's
 * uid, gid and up to 16 supplementary groups, so the server decides access
 * exactly as for a local process.
 *
 * The kernel gives uid and gid with each request, but the groups only
 * through /proc/<pid>/status, which libfuse reads twice per call; on
 * lookup-heavy work that was a third of our CPU time. So the groups are
 * kept per process for a second. A process's groups change only by
 * setgroups(), which only root may call, and root changing its groups
 * while keeping uid and gid gains nothing from old ones on the server;
 * any change of uid or gid misses the cache.
 */
#include "fs_internal.h"

#include <string.h>

#define GROUPS_TTL_S 1.0

static void read_groups(fuse_req_t req, struct fs_groups *g)
{
    gid_t groups[NC_MAX_GROUPS];
    int n = fuse_req_getgroups(req, NC_MAX_GROUPS, groups);
    /* It returns the process's total; AUTH_SYS cannot carry more than 16. A
     * process that is gone (-ESRCH) or a kernel request has none to send. */
    if (n > NC_MAX_GROUPS)
        n = NC_MAX_GROUPS;
    g->ngroups = n > 0 ? (uint32_t)n : 0;
    for (uint32_t i = 0; i < g->ngroups; i++)
        g->groups[i] = groups[i];
}

void fs_req_cred(struct fs *fs, fuse_req_t req, struct nc_cred *cred)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    memset(cred, 0, sizeof(*cred));
    cred->uid = ctx->uid;
    cred->gid = ctx->gid;

    struct fs_groups *g = &fs->groups_cache[(unsigned)ctx->pid % FS_GROUPS_CACHED];
    double now = fs_now();
    if (g->pid != ctx->pid || g->uid != ctx->uid || g->gid != ctx->gid || now >= g->expires ||
        ctx->pid == 0) {
        g->pid = ctx->pid;
        g->uid = ctx->uid;
        g->gid = ctx->gid;
        g->expires = now + GROUPS_TTL_S;
        read_groups(req, g);
    }
    cred->ngroups = g->ngroups;
    memcpy(cred->groups, g->groups, g->ngroups * sizeof(cred->groups[0]));

    if (fs->config.uid_override >= 0)
        cred->uid = (uint32_t)fs->config.uid_override;
    if (fs->config.gid_override >= 0)
        cred->gid = (uint32_t)fs->config.gid_override;
}
