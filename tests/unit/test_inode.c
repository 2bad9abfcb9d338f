/* The inode table: by filehandle, lookup counts, forget, names, attributes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fuse/fs_internal.h"

#include <stdio.h>
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

/* An inode as a reply to the kernel leaves it: found by handle, counted once. */
static struct fs_inode *looked_up(struct fs *fs, unsigned n, uint32_t mode)
{
    struct nc_fh fh = make_fh(n);
    struct fs_inode *in = fs_inode_find_or_add(fs, &fh);
    assert_non_null(in);
    struct nc_attr a = make_attr(1000 + n, mode);
    fs_inode_set_attr(fs, in, &a, fs_attr_stamp(fs));
    in->nlookup++;
    return in;
}

static bool exists(struct fs *fs, unsigned n)
{
    struct nc_fh fh = make_fh(n);
    return fs_inode_find(fs, &fh) != NULL;
}

static int setup(void **state)
{
    struct fs *fs = calloc(1, sizeof(*fs));
    fs->config.attr_timeout = 1.0;
    fs->config.entry_timeout = 1.0;
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

static void test_root_is_fuse_root_and_never_freed(void **state)
{
    struct fs *fs = *state;
    assert_ptr_equal(fs_inode_get(fs, FUSE_ROOT_ID), fs->root);
    assert_int_equal(fs_inode_ino(fs, fs->root), FUSE_ROOT_ID);
    struct nc_fh root = make_fh(0);
    assert_ptr_equal(fs_inode_find(fs, &root), fs->root);
    fs_inode_forget(fs, fs->root, 1000);
    fs_inode_put_if_unused(fs, fs->root);
    assert_ptr_equal(fs_inode_find(fs, &root), fs->root);
    assert_int_equal(fs->root->attr.fileid, 2);
}

static void test_keyed_by_filehandle(void **state)
{
    struct fs *fs = *state;
    struct nc_fh a = make_fh(1), b = make_fh(2);
    struct fs_inode *ia = fs_inode_find_or_add(fs, &a);
    struct fs_inode *ib = fs_inode_find_or_add(fs, &b);
    assert_non_null(ia);
    assert_non_null(ib);
    assert_ptr_not_equal(ia, ib);
    assert_ptr_equal(fs_inode_find_or_add(fs, &a), ia);
    assert_ptr_equal(fs_inode_find(fs, &b), ib);
    assert_ptr_equal(fs_inode_get(fs, fs_inode_ino(fs, ia)), ia);
    assert_int_not_equal(fs_inode_ino(fs, ia), FUSE_ROOT_ID);
    assert_int_not_equal(ia->generation, ib->generation);
    /* A longer handle with the same prefix is another file. */
    struct nc_fh a2 = a;
    a2.len = 9;
    assert_null(fs_inode_find(fs, &a2));
}

static void test_unused_new_inode_is_dropped(void **state)
{
    struct fs *fs = *state;
    struct nc_fh h = make_fh(3);
    struct fs_inode *in = fs_inode_find_or_add(fs, &h);
    assert_non_null(in);
    fs_inode_put_if_unused(fs, in); /* a reply that never reached the kernel */
    assert_false(exists(fs, 3));
}

static void test_lookup_counts_and_forget(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *in = looked_up(fs, 4, S_IFREG | 0644);
    in->nlookup++; /* looked up twice */
    struct fuse_entry_param e;
    fs_entry_param(fs, in, &e);
    assert_int_equal(in->nlookup, 2);      /* filling an entry counts nothing */
    assert_int_equal(e.attr.st_ino, 1004); /* st_ino is the NFS fileid */
    assert_int_equal(e.ino, fs_inode_ino(fs, in));
    assert_int_equal(e.generation, in->generation);
    assert_true(e.attr_timeout == 1.0 && e.entry_timeout == 1.0);
    fs_inode_forget(fs, in, 1);
    assert_true(exists(fs, 4));
    fs_inode_forget(fs, in, 1);
    assert_false(exists(fs, 4)); /* gone at zero */
    assert_int_equal(fs->ninodes, 1);
}

static void test_forget_more_than_counted_is_clamped(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *in = looked_up(fs, 5, S_IFREG | 0644);
    fs_inode_forget(fs, in, 7);
    assert_false(exists(fs, 5));
}

static void test_our_references_keep_it(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *in = looked_up(fs, 6, S_IFREG | 0644);
    fs_inode_ref(in); /* an open file */
    fs_inode_forget(fs, in, 1);
    assert_true(exists(fs, 6));
    fs_inode_unref(fs, in);
    assert_false(exists(fs, 6));
}

static void test_names_and_parents(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *dir = looked_up(fs, 10, S_IFDIR | 0755);
    struct fs_inode *dir2 = looked_up(fs, 11, S_IFDIR | 0755);
    struct fs_inode *file = looked_up(fs, 12, S_IFREG | 0644);
    fs_inode_add_name(fs, dir, fs->root, "d");
    fs_inode_add_name(fs, dir2, fs->root, "d2");
    fs_inode_add_name(fs, file, dir, "a");
    assert_ptr_equal(fs_inode_parent(file), dir);
    assert_string_equal(file->names->name, "a");
    assert_ptr_equal(fs_name_lookup(fs, dir, "a"), file);
    assert_null(fs_name_lookup(fs, dir2, "a"));
    assert_int_equal(dir->refs, 1); /* the name holds its directory */

    /* rename: the name and parent move; the old parent is let go */
    fs_name_rename(fs, dir, "a", dir2, "b");
    assert_ptr_equal(fs_inode_parent(file), dir2);
    assert_string_equal(file->names->name, "b");
    assert_int_equal(file->nnames, 1);
    assert_null(fs_name_lookup(fs, dir, "a"));
    assert_ptr_equal(fs_name_lookup(fs, dir2, "b"), file);
    assert_int_equal(dir->refs, 0);
    assert_int_equal(dir2->refs, 1);

    /* the directory outlives the kernel's forget while a child names it */
    fs_inode_forget(fs, dir2, 1);
    assert_true(exists(fs, 11));
    fs_inode_forget(fs, file, 1);
    assert_false(exists(fs, 12));
    assert_false(exists(fs, 11)); /* freed with its last child */
    fs_inode_forget(fs, dir, 1);
    assert_false(exists(fs, 10));
    assert_int_equal(fs->ninodes, 1);
    assert_int_equal(fs->nnames, 0);
    assert_int_equal(fs->root->refs, 0);
}

static void test_rename_replaces_target(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *a = looked_up(fs, 20, S_IFREG | 0644);
    struct fs_inode *b = looked_up(fs, 21, S_IFREG | 0644);
    fs_inode_add_name(fs, a, fs->root, "a");
    fs_inode_add_name(fs, b, fs->root, "b");
    fs_name_rename(fs, fs->root, "a", fs->root, "b");
    assert_ptr_equal(fs_name_lookup(fs, fs->root, "b"), a);
    assert_null(fs_name_lookup(fs, fs->root, "a"));
    assert_null(b->names);       /* replaced: no name left to open it by */
    assert_true(exists(fs, 21)); /* but the kernel still holds it */
    /* rename onto itself changes nothing */
    fs_name_rename(fs, fs->root, "b", fs->root, "b");
    assert_ptr_equal(fs_name_lookup(fs, fs->root, "b"), a);
    /* renaming a name we never saw only drops the target's */
    fs_name_rename(fs, fs->root, "unknown", fs->root, "b");
    assert_null(a->names);
    fs_inode_forget(fs, a, 1);
    fs_inode_forget(fs, b, 1);
    assert_int_equal(fs->ninodes, 1);
}

static void test_hard_links(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *f = looked_up(fs, 30, S_IFREG | 0644);
    fs_inode_add_name(fs, f, fs->root, "one");
    fs_inode_add_name(fs, f, fs->root, "two");
    assert_int_equal(f->nnames, 2);
    assert_string_equal(f->names->name, "two"); /* latest first */
    /* seen again under an older name: it moves to the front */
    fs_inode_add_name(fs, f, fs->root, "one");
    assert_int_equal(f->nnames, 2);
    assert_string_equal(f->names->name, "one");
    /* unlink of one name: the other still opens it */
    fs_name_remove(fs, fs->root, "one");
    assert_int_equal(f->nnames, 1);
    assert_string_equal(f->names->name, "two");
    /* a name now used by another file is moved, not shared */
    struct fs_inode *g = looked_up(fs, 31, S_IFREG | 0644);
    fs_inode_add_name(fs, g, fs->root, "two");
    assert_null(f->names);
    assert_ptr_equal(fs_name_lookup(fs, fs->root, "two"), g);
    /* only the latest few names are kept */
    char name[16];
    for (int i = 0; i < FS_NAMES_PER_INODE + 3; i++) {
        snprintf(name, sizeof(name), "l%d", i);
        fs_inode_add_name(fs, f, fs->root, name);
    }
    assert_int_equal(f->nnames, FS_NAMES_PER_INODE);
    assert_null(fs_name_lookup(fs, fs->root, "l0"));
    snprintf(name, sizeof(name), "l%d", FS_NAMES_PER_INODE + 2);
    assert_ptr_equal(fs_name_lookup(fs, fs->root, name), f);
    assert_int_equal(fs->root->refs, FS_NAMES_PER_INODE + 1);
    fs_inode_forget(fs, f, 1);
    fs_inode_forget(fs, g, 1);
    assert_int_equal(fs->root->refs, 0);
    assert_int_equal(fs->nnames, 0);
}

static void test_directory_has_one_name(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *d = looked_up(fs, 40, S_IFDIR | 0755);
    fs_inode_add_name(fs, d, fs->root, "old");
    fs_inode_add_name(fs, d, fs->root, "new"); /* renamed by another client */
    assert_int_equal(d->nnames, 1);
    assert_null(fs_name_lookup(fs, fs->root, "old"));
    /* an inode is never named in itself (".") */
    fs_inode_add_name(fs, d, d, ".");
    assert_int_equal(d->nnames, 1);
    fs_inode_forget(fs, d, 1);
}

static void test_deep_tree_frees_without_recursion(void **state)
{
    struct fs *fs = *state;
    enum { DEPTH = 100000 };
    struct fs_inode *dir = fs->root;
    struct fs_inode *first = NULL;
    for (unsigned i = 0; i < DEPTH; i++) {
        struct fs_inode *d = looked_up(fs, 1000 + i, S_IFDIR | 0755);
        fs_inode_add_name(fs, d, dir, "d");
        if (dir != fs->root)
            fs_inode_forget(fs, dir, 1); /* held only by its child's name now */
        if (!first)
            first = d;
        dir = d;
    }
    assert_int_equal(fs->ninodes, DEPTH + 1);
    assert_true(exists(fs, 1000));
    fs_inode_forget(fs, dir, 1); /* the leaf goes, and every ancestor with it */
    assert_int_equal(fs->ninodes, 1);
    assert_int_equal(fs->nnames, 0);
    assert_int_equal(fs->root->refs, 0);
}

static void test_table_grows(void **state)
{
    struct fs *fs = *state;
    enum { N = 20000 };
    for (unsigned i = 100; i < 100 + N; i++) {
        struct fs_inode *in = looked_up(fs, i, S_IFREG | 0644);
        char name[16];
        snprintf(name, sizeof(name), "f%u", i);
        fs_inode_add_name(fs, in, fs->root, name);
    }
    assert_true(fs->nbuckets >= N);
    assert_true(fs->nname_buckets >= N);
    for (unsigned i = 100; i < 100 + N; i++) {
        struct nc_fh h = make_fh(i);
        struct fs_inode *in = fs_inode_find(fs, &h);
        assert_non_null(in);
        char name[16];
        snprintf(name, sizeof(name), "f%u", i);
        assert_ptr_equal(fs_name_lookup(fs, fs->root, name), in);
        fs_inode_forget(fs, in, 1);
    }
    assert_int_equal(fs->ninodes, 1);
    assert_int_equal(fs->nnames, 0);
}

static void test_outdated_attributes_are_refused(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *in = looked_up(fs, 50, S_IFREG | 0644);
    double left;
    assert_true(fs_inode_attr_fresh(in, &left));
    assert_true(left > 0 && left <= 1.0);

    uint64_t before_write = fs_attr_stamp(fs); /* a GETATTR leaves */
    fs_inode_attr_stale(fs, in);               /* then a write is answered */
    assert_false(fs_inode_attr_fresh(in, &left));
    struct nc_attr old = make_attr(1050, S_IFREG | 0644);
    old.size = 1;
    assert_false(fs_inode_set_attr(fs, in, &old, before_write));
    assert_int_equal(in->attr.size, 0);

    struct nc_attr now = old;
    now.size = 4096;
    assert_true(fs_inode_set_attr(fs, in, &now, fs_attr_stamp(fs)));
    assert_true(fs_inode_attr_fresh(in, &left));
    assert_int_equal(in->attr.size, 4096);
    fs_inode_forget(fs, in, 1);
}

static void test_size_covers_writes_until_the_server_shows_them(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *in = looked_up(fs, 60, S_IFREG | 0644);
    struct nc_attr a = make_attr(1060, S_IFREG | 0644);
    a.size = 100;
    uint64_t early = fs_attr_stamp(fs);
    fs_inode_set_attr(fs, in, &a, early);
    struct stat st;

    /* a write to 5000 is in flight */
    in->writes_in_flight = 1;
    in->write_end = 5000;
    fs_attr_to_stat(in, &in->attr, &st);
    assert_int_equal(st.st_size, 5000);
    double left;
    assert_false(fs_inode_attr_fresh(in, &left));

    /* attributes that arrive meanwhile do not end the cover */
    assert_true(fs_inode_set_attr(fs, in, &a, fs_attr_stamp(fs)));
    fs_attr_to_stat(in, &in->attr, &st);
    assert_int_equal(st.st_size, 5000);

    /* answered; attributes from before that are refused, the cover stays */
    in->writes_in_flight = 0;
    fs_inode_attr_stale(fs, in);
    assert_false(fs_inode_set_attr(fs, in, &a, early));
    fs_attr_to_stat(in, &in->attr, &st);
    assert_int_equal(st.st_size, 5000);

    /* attributes from a request sent after the write end it */
    a.size = 4000; /* say another client truncated since */
    assert_true(fs_inode_set_attr(fs, in, &a, fs_attr_stamp(fs)));
    fs_attr_to_stat(in, &in->attr, &st);
    assert_int_equal(st.st_size, 4000);
    fs_inode_forget(fs, in, 1);
}

static void test_stat_fields(void **state)
{
    struct fs *fs = *state;
    struct nc_attr a = make_attr(77, S_IFCHR | 0600);
    a.nlink = 3;
    a.uid = 1000;
    a.gid = 2000;
    a.size = 12345;
    a.space_used = 16384;
    a.rdev_major = 4;
    a.rdev_minor = 64;
    a.mtime.tv_sec = 1700000000;
    a.mtime.tv_nsec = 123456789;
    struct stat st;
    fs_attr_to_stat(NULL, &a, &st);
    assert_int_equal(st.st_ino, 77);
    assert_int_equal(st.st_mode, S_IFCHR | 0600);
    assert_int_equal(st.st_nlink, 3);
    assert_int_equal(st.st_uid, 1000);
    assert_int_equal(st.st_gid, 2000);
    assert_int_equal(st.st_size, 12345);
    assert_int_equal(st.st_blocks, 32);
    assert_int_equal(major(st.st_rdev), 4);
    assert_int_equal(minor(st.st_rdev), 64);
    assert_int_equal(st.st_mtim.tv_nsec, 123456789);
    (void)fs;
}

static int ran;
static void count_run(struct fs *fs, void *arg)
{
    (void)fs;
    (void)arg;
    ran++;
}

static void test_when_idle(void **state)
{
    struct fs *fs = *state;
    struct fs_inode *in = looked_up(fs, 70, S_IFREG | 0644);
    ran = 0;
    fs_inode_when_idle(fs, in, count_run, NULL);
    assert_int_equal(ran, 1); /* nothing in flight: at once */
    in->writes_in_flight = 2;
    fs_inode_when_idle(fs, in, count_run, NULL);
    fs_inode_when_idle(fs, in, count_run, NULL);
    assert_int_equal(ran, 1);
    assert_int_equal(in->refs, 2); /* waiters hold the inode */
    in->writes_in_flight = 1;
    fs_inode_writes_done(fs, in);
    assert_int_equal(ran, 1);
    in->writes_in_flight = 0;
    fs_inode_forget(fs, in, 1); /* the kernel lets go while waiters remain */
    assert_true(exists(fs, 70));
    fs_inode_writes_done(fs, in);
    assert_int_equal(ran, 3);
    assert_false(exists(fs, 70));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_root_is_fuse_root_and_never_freed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyed_by_filehandle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unused_new_inode_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup_counts_and_forget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forget_more_than_counted_is_clamped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_our_references_keep_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_and_parents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_replaces_target, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hard_links, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_has_one_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deep_tree_frees_without_recursion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_table_grows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outdated_attributes_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_covers_writes_until_the_server_shows_them, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stat_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_when_idle, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
