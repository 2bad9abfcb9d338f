/* fs_request_buf_take: a large WRITE keeps the buffer it was read into. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fuse/fs_internal.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#define BUF_SIZE ((1u << 20) + 4096) /* what libfuse allocates: 256 pages and a header */
#define HEADER 80                    /* fuse_in_header + fuse_write_in */

struct fixture {
    struct fs fs;
    struct fuse_buf buf;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->buf.mem = malloc(BUF_SIZE);
    f->buf.size = BUF_SIZE;
    f->fs.request_buf = &f->buf;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    free(f->buf.mem);
    free(f);
    return 0;
}

static void test_large_write_takes_the_buffer(void **state)
{
    struct fixture *f = *state;
    char *before = f->buf.mem;
    const char *data = before + HEADER;
    char *taken = fs_request_buf_take(&f->fs, data, 1u << 20);
    assert_ptr_equal(taken, before);
    /* The loop reads the next request into a new buffer, as large. */
    assert_non_null(f->buf.mem);
    assert_ptr_not_equal(f->buf.mem, before);
    assert_true(malloc_usable_size(f->buf.mem) >= BUF_SIZE);
    memset(f->buf.mem, 0, BUF_SIZE);
    free(taken);
}

static void test_small_write_is_copied(void **state)
{
    struct fixture *f = *state;
    char *before = f->buf.mem;
    assert_null(fs_request_buf_take(&f->fs, before + HEADER, 64 * 1024));
    assert_ptr_equal(f->buf.mem, before);
}

static void test_data_outside_the_buffer_is_copied(void **state)
{
    struct fixture *f = *state;
    char *elsewhere = calloc(1, 1u << 20);
    assert_null(fs_request_buf_take(&f->fs, elsewhere, 1u << 20));
    /* Reaching past the bytes read. */
    f->buf.size = HEADER + (1u << 19);
    assert_null(fs_request_buf_take(&f->fs, f->buf.mem + HEADER, 1u << 20));
    free(elsewhere);
}

static void test_no_request_or_a_pipe_buffer(void **state)
{
    struct fixture *f = *state;
    char *data = f->buf.mem + HEADER;
    f->fs.request_buf = NULL;
    assert_null(fs_request_buf_take(&f->fs, data, 1u << 20));
    f->fs.request_buf = &f->buf;
    f->buf.flags = FUSE_BUF_IS_FD;
    assert_null(fs_request_buf_take(&f->fs, data, 1u << 20));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_large_write_takes_the_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_write_is_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_outside_the_buffer_is_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_request_or_a_pipe_buffer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
