/* What a lock-owner holds, as POSIX sees it: what recovery reclaims after a
 * server restart. A lock sets a range to its type, an unlock clears it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "nfsclient/nc_internal.h"

#include <stdint.h>
#include <stdlib.h>

#define W NC_LOCK_WRITE
#define R NC_LOCK_READ
#define EOF_ UINT64_MAX

static void expect(const struct nc_lockowner *lo, const struct nc_lockrange *want, unsigned n)
{
    assert_int_equal(lo->nranges, n);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(lo->ranges[i].start, want[i].start);
        assert_true(lo->ranges[i].end == want[i].end);
        assert_int_equal(lo->ranges[i].type, want[i].type);
    }
}

static void test_lock_and_unlock(void **state)
{
    struct nc_lockowner lo = {0};
    nc_lockowner_update(&lo, 0, 100, W);
    expect(&lo, (struct nc_lockrange[]){{0, 100, W}}, 1);
    nc_lockowner_update(&lo, 0, 100, 0);
    expect(&lo, NULL, 0);
    free(lo.ranges);
}

static void test_unlock_splits(void **state)
{
    struct nc_lockowner lo = {0};
    nc_lockowner_update(&lo, 0, 0, W); /* whole file */
    nc_lockowner_update(&lo, 10, 5, 0);
    expect(&lo, (struct nc_lockrange[]){{0, 10, W}, {15, EOF_, W}}, 2);
    free(lo.ranges);
}

static void test_type_change_in_the_middle(void **state)
{
    struct nc_lockowner lo = {0};
    nc_lockowner_update(&lo, 0, 100, W);
    nc_lockowner_update(&lo, 40, 20, R);
    expect(&lo, (struct nc_lockrange[]){{0, 40, W}, {40, 60, R}, {60, 100, W}}, 3);
    /* the same type again merges back into one range */
    nc_lockowner_update(&lo, 40, 20, W);
    expect(&lo, (struct nc_lockrange[]){{0, 100, W}}, 1);
    free(lo.ranges);
}

static void test_adjacent_and_overlapping_merge(void **state)
{
    struct nc_lockowner lo = {0};
    nc_lockowner_update(&lo, 200, 100, R);
    nc_lockowner_update(&lo, 0, 100, R);
    nc_lockowner_update(&lo, 100, 100, R);
    expect(&lo, (struct nc_lockrange[]){{0, 300, R}}, 1);
    nc_lockowner_update(&lo, 250, 0, W); /* to end of file, over the tail */
    expect(&lo, (struct nc_lockrange[]){{0, 250, R}, {250, EOF_, W}}, 2);
    free(lo.ranges);
}

static void test_unlock_of_nothing(void **state)
{
    struct nc_lockowner lo = {0};
    nc_lockowner_update(&lo, 0, 10, W);
    nc_lockowner_update(&lo, 20, 10, 0);
    expect(&lo, (struct nc_lockrange[]){{0, 10, W}}, 1);
    nc_lockowner_update(&lo, 0, 0, 0);
    expect(&lo, NULL, 0);
    free(lo.ranges);
}

static void test_length_overflowing_is_to_eof(void **state)
{
    struct nc_lockowner lo = {0};
    nc_lockowner_update(&lo, 10, UINT64_MAX - 5, W);
    expect(&lo, (struct nc_lockrange[]){{10, EOF_, W}}, 1);
    free(lo.ranges);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_and_unlock),
        cmocka_unit_test(test_unlock_splits),
        cmocka_unit_test(test_type_change_in_the_middle),
        cmocka_unit_test(test_adjacent_and_overlapping_merge),
        cmocka_unit_test(test_unlock_of_nothing),
        cmocka_unit_test(test_length_overflowing_is_to_eof),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
