/* fs_heap_prepare: the memory of the allocations that follow is resident before they touch it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fuse/fs_internal.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define BLOCK (4u << 20)

/* Pages of [p, p + len) that are resident, in percent. */
static unsigned resident_percent(const void *p, size_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t to = ((uintptr_t)p + len) & ~(page - 1);
    size_t pages = (to - from) / page;
    unsigned char *vec = malloc(pages);
    assert_non_null(vec);
    assert_int_equal(mincore((void *)from, to - from, vec), 0);
    size_t in = 0;
    for (size_t i = 0; i < pages; i++)
        in += vec[i] & 1;
    free(vec);
    return (unsigned)(in * 100 / pages);
}

static void test_prepared_memory_is_resident(void **state)
{
    (void)state;
    /* efsfuse's settings (sidecar/main.c): blocks this size come from the
     * heap and stay there when freed. */
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    char *probe = malloc(BLOCK);
    assert_non_null(probe);
    free(probe);
    char *again = malloc(BLOCK);
    bool reused = again == probe;
    free(again);
    if (!reused)
        skip(); /* valgrind's or a sanitizer's malloc: freed blocks are not handed back */

    /* Without preparing: a new block of the heap is not there yet. */
    char *held = malloc(BLOCK);
    assert_non_null(held);
    assert_true(resident_percent(held, BLOCK) < 10);

    fs_heap_prepare(BLOCK);
    char *prepared = malloc(BLOCK);
    assert_non_null(prepared);
    assert_true(resident_percent(prepared, BLOCK) > 90);
    free(prepared);
    free(held);
}

static void test_nothing_asked_nothing_done(void **state)
{
    (void)state;
    fs_heap_prepare(0); /* must not crash or allocate */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepared_memory_is_resident),
        cmocka_unit_test(test_nothing_asked_nothing_done),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
