/* The names of directories we made (-o dircache): what is known absent, and
 * every way that knowledge ends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fuse/fs_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fixture {
    struct fs fs;
    struct fs_inode dir;
    uint64_t change; /* the server's change attribute of dir, as we model it */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->fs.config.dircache = true;
    f->fs.config.negative_timeout = 60;
    f->dir.attr.mode = S_IFDIR | 0755;
    f->change = 1000;
    struct nc_attr a = {.mode = S_IFDIR | 0755, .change = f->change};
    fs_dircache_made(&f->fs, &f->dir, &a);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    fs_dircache_forget(&f->fs, &f->dir);
    assert_int_equal(f->fs.dircache_names, 0);
    free(f);
    return 0;
}

static bool absent(struct fixture *f, const char *name)
{
    double remaining = 0;
    bool r = fs_dircache_absent(&f->fs, &f->dir, name, &remaining);
    if (r)
        assert_true(remaining > 0 && remaining <= f->fs.config.negative_timeout);
    return r;
}

/* One change of ours, answered in order by the server. */
static void ours(struct fixture *f, const char *added, const char *removed)
{
    fs_dircache_change_start(&f->dir);
    struct nc_dir_change ch = {.valid = true, .before = f->change, .after = f->change + 1};
    f->change++;
    fs_dircache_change_done(&f->fs, &f->dir, added, removed, &ch);
}

static void test_a_made_directory_is_empty(void **state)
{
    struct fixture *f = *state;
    assert_true(absent(f, "anything"));
    ours(f, "a", NULL);
    assert_false(absent(f, "a"));
    assert_true(absent(f, "b"));
    ours(f, NULL, "a");
    assert_true(absent(f, "a"));
    ours(f, "new", "old"); /* a rename within the directory */
    assert_false(absent(f, "new"));
    assert_true(absent(f, "old"));
}

static void test_no_answer_while_a_change_is_on_the_wire(void **state)
{
    struct fixture *f = *state;
    fs_dircache_change_start(&f->dir);
    assert_false(absent(f, "x"));
    struct nc_dir_change ch = {.valid = true, .before = f->change, .after = f->change + 1};
    fs_dircache_change_done(&f->fs, &f->dir, "x", NULL, &ch);
    assert_false(absent(f, "x"));
    assert_true(absent(f, "y"));
}

/* Many adds and removes against a reference: the open-addressing set with
 * backward-shift deletion must agree on every name, through its growth. */
static void test_many_names_agree_with_a_reference(void **state)
{
    struct fixture *f = *state;
    enum { N = 3000 };
    static bool present[N];
    memset(present, 0, sizeof(present));
    unsigned seed = 12345;
    char name[32];
    for (int step = 0; step < 20000; step++) {
        seed = seed * 1103515245u + 12345u;
        unsigned i = (seed >> 8) % N;
        snprintf(name, sizeof(name), "name-%u", i);
        if (present[i])
            ours(f, NULL, name);
        else
            ours(f, name, NULL);
        present[i] = !present[i];
        if (step % 997 == 0 || step == 19999) {
            size_t count = 0;
            for (unsigned j = 0; j < N; j++) {
                snprintf(name, sizeof(name), "name-%u", j);
                assert_int_equal(absent(f, name), !present[j]);
                count += present[j];
            }
            assert_int_equal(f->fs.dircache_names, count);
        }
    }
}

static void test_changes_answered_out_of_order(void **state)
{
    struct fixture *f = *state;
    fs_dircache_change_start(&f->dir);
    fs_dircache_change_start(&f->dir);
    struct nc_dir_change first = {.valid = true, .before = f->change, .after = f->change + 1};
    struct nc_dir_change second = {.valid = true, .before = f->change + 1, .after = f->change + 2};
    f->change += 2;
    fs_dircache_change_done(&f->fs, &f->dir, "b", NULL, &second);
    fs_dircache_change_done(&f->fs, &f->dir, "a", NULL, &first);
    assert_true(absent(f, "c"));
    assert_false(absent(f, "a"));
    assert_false(absent(f, "b"));
    ours(f, "d", NULL); /* and the chain goes on from the second's after */
    assert_true(absent(f, "c"));
}

static void test_another_clients_change_ends_it(void **state)
{
    struct fixture *f = *state;
    ours(f, "a", NULL);
    f->change += 5; /* someone else's creates */
    ours(f, "b", NULL);
    assert_false(absent(f, "c"));
    assert_int_equal(f->fs.dircache_names, 0);
}

static void test_a_change_without_change_info_ends_it(void **state)
{
    struct fixture *f = *state;
    fs_dircache_change_start(&f->dir);
    struct nc_dir_change none = {0};
    fs_dircache_change_done(&f->fs, &f->dir, "a", NULL, &none);
    assert_false(absent(f, "b"));
}

static void test_a_failed_change_ends_it(void **state)
{
    struct fixture *f = *state;
    ours(f, "a", NULL);
    fs_dircache_change_start(&f->dir);
    struct nc_dir_change failed = {0}; /* e.g. EEXIST: a name we did not know */
    fs_dircache_change_done(&f->fs, &f->dir, "a2", NULL, &failed);
    assert_false(absent(f, "b"));
}

static void test_attributes_confirm_or_end_it(void **state)
{
    struct fixture *f = *state;
    ours(f, "a", NULL);
    struct nc_attr same = {.mode = S_IFDIR | 0755, .change = f->change};
    fs_dircache_attr_seen(&f->fs, &f->dir, &same);
    assert_true(absent(f, "b"));
    struct nc_attr moved = {.mode = S_IFDIR | 0755, .change = f->change + 1};
    fs_dircache_attr_seen(&f->fs, &f->dir, &moved);
    assert_false(absent(f, "b"));
}

static void test_answers_last_negative_timeout_at_most(void **state)
{
    struct fixture *f = *state;
    f->fs.config.negative_timeout = 0.05;
    ours(f, "a", NULL); /* confirmed now */
    assert_true(absent(f, "b"));
    struct timespec ts = {0, 80 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_false(absent(f, "b"));
}

static void test_off_unless_asked(void **state)
{
    struct fs fs = {0};
    struct fs_inode dir = {0};
    struct nc_attr a = {.mode = S_IFDIR | 0755, .change = 7};
    double remaining;
    fs.config.negative_timeout = 1;
    fs_dircache_made(&fs, &dir, &a); /* config.dircache false */
    assert_false(fs_dircache_absent(&fs, &dir, "x", &remaining));
    fs.config.dircache = true;
    fs.config.negative_timeout = 0; /* no negative caching: nothing to answer */
    fs_dircache_made(&fs, &dir, &a);
    assert_false(fs_dircache_absent(&fs, &dir, "x", &remaining));
    assert_null(dir.dircache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_made_directory_is_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_answer_while_a_change_is_on_the_wire, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_names_agree_with_a_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_answered_out_of_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_another_clients_change_ends_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_change_without_change_info_ends_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_change_ends_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attributes_confirm_or_end_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answers_last_negative_timeout_at_most, setup,
                                        teardown),
        cmocka_unit_test(test_off_unless_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
