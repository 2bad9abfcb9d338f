/* The inode table: lookup by filehandle, lookup counts, forget, names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fuse/fs_internal.h"

#include <stdlib.h>
#include <string.h>

static struct nc_fh make_fh(unsigned n)
{
    struct nc_fh fh = {.len = 8};
    memcpy(fh.data, &n, sizeof(n));
    memcpy(fh.data + 4, "efsf", 4);
    return fh;
}

static struct nc_attr make_attr(uint64_t fileid, uint32_t mode)
{
    struct nc_attr a = {0};
    a.fileid = fileid;
    a.mode = mode;
    a.nlink = 1;
    return a;
}

static int setup(void **state)
{
    struct fs *fs = calloc(1, sizeof(*fs));
    struct nc_fh root = make_fh(0);
    struct nc_attr ra = make_attr(2, S_IFDIR | 0755);
    assert_int_equal(fs_inodes_init(fs, &root, &ra), 0);
    *state = fs;
    return 0;
}

static int teardown(void **state)
{
    struct fs *fs = *state;
    fs_inodes_free(fs);
    free(fs);
    return 0;
}

static void test_root_is_fuse_root(void **state)
{
    struct fs *fs = *state;
    assert_ptr_equal(fs_inode_get(fs, FUSE_ROOT_ID), fs->root);
    assert_int_equal(fs_inode_ino(fs, fs->root), FUSE_ROOT_ID);
    struct nc_fh root = make_fh(0);
    assert_ptr_equal(fs_inode_find(fs, &root), fs->root);
    /* forgetting the root never frees it */
    fs_inode_forget(fs, fs->root, 1000);
    assert_ptr_equal(fs_inode_find(fs, &root), fs->root);
}

static void test_find_or_add_is_keyed_by_handle(void **state)
{
    struct fs *fs = *state;
    struct nc_fh a = make_fh(1), b = make_fh(2);
    struct nc_attr aa = make_attr(11, S_IFREG | 0644);
    struct fs_inode *ia = fs_inode_find_or_add(fs, &a, &aa);
    struct fs_inode *ib = fs_inode_find_or_add(fs, &b, NULL);
    assert_non_null(ia);
    assert_non_null(ib);
    assert_ptr_not_equal(ia, ib);
    assert_ptr_equal(fs_inode_find_or_add(fs, &a, NULL), ia);
    assert_true(ia->has_attr);
    assert_false(ib->has_attr);
    assert_int_equal(ia->attr.fileid, 11);
    assert_ptr_equal(fs_inode_get(fs, fs_inode_ino(fs, ia)), ia);
    assert_int_not_equal(ia->generation, ib->generation);
}

static void test_lookup_count_and_forget(void **state)
{
    struct fs *fs = *state;
    struct nc_fh h = make_fh(3);
    struct nc_attr at = make_attr(33, S_IFREG | 0644);
    struct fs_inode *in = fs_inode_find_or_add(fs, &h, &at);
    struct fuse_entry_param e;
    fs_entry_param(fs, in, &e);
    fs_entry_param(fs, in, &e);
    assert_int_equal(in->nlookup, 2);
    assert_int_equal(e.attr.st_ino, 33);
    assert_int_equal(e.ino, fs_inode_ino(fs, in));
    fs_inode_forget(fs, in, 1);
    assert_ptr_equal(fs_inode_find(fs, &h), in); /* one reference left */
    fs_inode_forget(fs, in, 1);
    assert_null(fs_inode_find(fs, &h)); /* gone at zero */
}

static void test_open_file_keeps_inode(void **state)
{
    struct fs *fs = *state;
    struct nc_fh h = make_fh(4);
    struct fs_inode *in = fs_inode_find_or_add(fs, &h, NULL);
    struct fuse_entry_param e;
    in->has_attr = true;
    fs_entry_param(fs, in, &e);
    fs_inode_ref(in); /* an open file */
    fs_inode_forget(fs, in, 1);
    assert_ptr_equal(fs_inode_find(fs, &h), in);
    fs_inode_unref(fs, in);
    assert_null(fs_inode_find(fs, &h));
}

static void test_names_and_parents(void **state)
{
    struct fs *fs = *state;
    struct nc_fh dh = make_fh(5), fh = make_fh(6), dh2 = make_fh(7);
    struct fs_inode *dir = fs_inode_find_or_add(fs, &dh, NULL);
    struct fs_inode *dir2 = fs_inode_find_or_add(fs, &dh2, NULL);
    struct fs_inode *file = fs_inode_find_or_add(fs, &fh, NULL);
    dir->nlookup = dir2->nlookup = file->nlookup = 1;
    fs_inode_set_name(fs, file, dir, "a");
    assert_ptr_equal(file->parent, dir);
    assert_string_equal(file->name, "a");
    assert_int_equal(dir->refs, 1); /* the child holds its parent */
    /* rename: the name and parent move, the old parent is let go */
    fs_inode_set_name(fs, file, dir2, "b");
    assert_ptr_equal(file->parent, dir2);
    assert_string_equal(file->name, "b");
    assert_int_equal(dir->refs, 0);
    assert_int_equal(dir2->refs, 1);
    /* the parent outlives the kernel's forget while a child names it */
    fs_inode_forget(fs, dir2, 1);
    assert_ptr_equal(fs_inode_find(fs, &dh2), dir2);
    fs_inode_forget(fs, file, 1);
    assert_null(fs_inode_find(fs, &fh));
    assert_null(fs_inode_find(fs, &dh2)); /* freed with its last child */
    fs_inode_forget(fs, dir, 1);
    assert_null(fs_inode_find(fs, &dh));
}

static void test_table_grows(void **state)
{
    struct fs *fs = *state;
    enum { N = 20000 };
    for (unsigned i = 100; i < 100 + N; i++) {
        struct nc_fh h = make_fh(i);
        struct fs_inode *in = fs_inode_find_or_add(fs, &h, NULL);
        in->nlookup = 1;
    }
    assert_true(fs->nbuckets >= N);
    for (unsigned i = 100; i < 100 + N; i++) {
        struct nc_fh h = make_fh(i);
        struct fs_inode *in = fs_inode_find(fs, &h);
        assert_non_null(in);
        fs_inode_forget(fs, in, 1);
    }
    assert_int_equal(fs->ninodes, 1); /* the root */
}

static void test_size_includes_writes_in_flight(void **state)
{
    struct fs *fs = *state;
    struct nc_fh h = make_fh(8);
    struct nc_attr at = make_attr(88, S_IFREG | 0644);
    at.size = 100;
    struct fs_inode *in = fs_inode_find_or_add(fs, &h, &at);
    struct stat st;
    in->writes_in_flight = 1;
    in->write_end = 5000;
    fs_attr_to_stat(in, &in->attr, &st);
    assert_int_equal(st.st_size, 5000);
    in->writes_in_flight = 0;
    fs_attr_to_stat(in, &in->attr, &st);
    assert_int_equal(st.st_size, 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_root_is_fuse_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_or_add_is_keyed_by_handle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup_count_and_forget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_file_keeps_inode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_and_parents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_table_grows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_includes_writes_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
