/*
 * Heap memory populated ahead of a burst of allocations.
 *
 * Every first touch of a heap page is a page fault, and on the VMs efsfuse
 * was measured on one costs ~11 µs, where populating the same pages with one
 * madvise(MADV_POPULATE_WRITE) costs under 1 µs each. Listing a new
 * 10,000-entry directory takes ~10 MB of new heap (the decoded READDIR
 * replies, the batches, an inode and a name per entry): ~2,400 faults, a
 * third of efsfuse's CPU samples for that `ls -l`.
 *
 * fs_heap_prepare() allocates a block of the size the burst will need,
 * populates it in one call and frees it: below the trim threshold
 * (sidecar/main.c) the memory stays in the heap, and the burst's
 * allocations land on pages already there. The idle trim (loop.c) gives it
 * back to the kernel. fs_heap_want() defers that until the loop is about to
 * wait, when the calls of the turn are on the wire (the NFS layer sends
 * them then): the server works on the request that brings the burst while
 * we populate.
 */
#include "fs_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

static bool populate_unsupported;

void fs_heap_prepare(size_t bytes)
{
    if (populate_unsupported || bytes == 0)
        return;
    /* volatile: a malloc and free the compiler could see through would be
     * optimised away. */
    char *volatile block = malloc(bytes);
    if (!block)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = ((uintptr_t)block + page - 1) & ~(page - 1);
    uintptr_t to = ((uintptr_t)block + bytes) & ~(page - 1);
    if (to > from && madvise((void *)from, to - from, MADV_POPULATE_WRITE) != 0 &&
        (errno == EINVAL || errno == ENOSYS))
        populate_unsupported = true; /* an older kernel: pages fault in as before */
    free(block);
}

void fs_heap_want(struct fs *fs, size_t bytes)
{
    if (bytes > fs->heap_wanted)
        fs->heap_wanted = bytes;
}

void fs_heap_prepare_wanted(struct fs *fs)
{
    if (fs->heap_wanted) {
        fs_heap_prepare(fs->heap_wanted);
        fs->heap_wanted = 0;
    }
}
