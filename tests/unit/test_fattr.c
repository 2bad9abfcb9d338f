/* fattr4 encoding (SETATTR / CREATE attributes) and decoding (GETATTR). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "nfsclient/nc_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

/* Builds a fattr4 for a decoder test from (bit, encoder) pairs in bit order. */
struct builder {
    uint32_t mask[2];
    struct nc_buf buf;
};

static void set_bit(struct builder *b, unsigned bit)
{
    b->mask[bit / 32] |= 1u << (bit % 32);
}

static fattr4 as_fattr(struct builder *b)
{
    fattr4 fa;
    fa.attrmask.bitmap4_len = 2;
    fa.attrmask.bitmap4_val = b->mask;
    fa.attr_vals.attrlist4_len = (u_int)b->buf.len;
    fa.attr_vals.attrlist4_val = (char *)b->buf.data;
    return fa;
}

static void test_decode_standard(void **state)
{
    struct builder b = {0};
    set_bit(&b, FATTR4_TYPE);
    nc_buf_put_u32(&b.buf, NF4DIR);
    set_bit(&b, FATTR4_CHANGE);
    nc_buf_put_u64(&b.buf, 77);
    set_bit(&b, FATTR4_SIZE);
    nc_buf_put_u64(&b.buf, 4096);
    set_bit(&b, FATTR4_FILEID);
    nc_buf_put_u64(&b.buf, 123456789012ull);
    set_bit(&b, FATTR4_MODE);
    nc_buf_put_u32(&b.buf, 0755);
    set_bit(&b, FATTR4_NUMLINKS);
    nc_buf_put_u32(&b.buf, 3);
    set_bit(&b, FATTR4_OWNER);
    nc_buf_put_opaque(&b.buf, "1000", 4);
    set_bit(&b, FATTR4_OWNER_GROUP);
    nc_buf_put_opaque(&b.buf, "nobody@example", 14);
    set_bit(&b, FATTR4_TIME_MODIFY);
    nc_buf_put_u64(&b.buf, 1700000000);
    nc_buf_put_u32(&b.buf, 123456789);
    fattr4 fa = as_fattr(&b);
    struct nc_attr a;
    assert_int_equal(nc_fattr_decode(&fa, &a), 0);
    assert_int_equal(a.mode, S_IFDIR | 0755);
    assert_int_equal(a.change, 77);
    assert_int_equal(a.size, 4096);
    assert_int_equal(a.fileid, 123456789012ull);
    assert_int_equal(a.nlink, 3);
    assert_int_equal(a.uid, 1000);
    assert_int_equal(a.gid, 65534); /* names we cannot map become nobody */
    assert_int_equal(a.mtime.tv_sec, 1700000000);
    assert_int_equal(a.mtime.tv_nsec, 123456789);
    nc_buf_free(&b.buf);
}

static void test_decode_truncated_is_error(void **state)
{
    struct builder b = {0};
    set_bit(&b, FATTR4_SIZE);
    nc_buf_put_u32(&b.buf, 1); /* half a u64 */
    fattr4 fa = as_fattr(&b);
    struct nc_attr a;
    assert_int_equal(nc_fattr_decode(&fa, &a), -EIO);
    nc_buf_free(&b.buf);
}

static void test_decode_unknown_attribute_is_error(void **state)
{
    struct builder b = {0};
    set_bit(&b, 60); /* not an NFSv4.0 attribute */
    nc_buf_put_u32(&b.buf, 0);
    fattr4 fa = as_fattr(&b);
    struct nc_attr a;
    assert_int_equal(nc_fattr_decode(&fa, &a), -EIO);
    nc_buf_free(&b.buf);
}

static void test_encode_roundtrip_order(void **state)
{
    struct nc_compound cp;
    nc_compound_init(&cp, "t");
    struct nc_setattr set = {.valid = NC_SET_SIZE | NC_SET_MODE | NC_SET_UID | NC_SET_GID |
                                      NC_SET_ATIME_NOW | NC_SET_MTIME,
                             .size = 5,
                             .mode = 01750,
                             .uid = 42,
                             .gid = 4242,
                             .mtime = {.tv_sec = 10, .tv_nsec = 20}};
    fattr4 fa;
    nc_fattr_encode(&cp, &fa, &set);
    assert_int_equal(fa.attrmask.bitmap4_val[0], 1u << FATTR4_SIZE);
    assert_int_equal(fa.attrmask.bitmap4_val[1],
                     (1u << (FATTR4_MODE - 32)) | (1u << (FATTR4_OWNER - 32)) |
                         (1u << (FATTR4_OWNER_GROUP - 32)) |
                         (1u << (FATTR4_TIME_ACCESS_SET - 32)) |
                         (1u << (FATTR4_TIME_MODIFY_SET - 32)));
    const unsigned char expect[] = {
        0, 0, 0, 0, 0, 0, 0, 5,                 /* size */
        0, 0, 0x03, 0xe8,                       /* mode 01750 */
        0, 0, 0, 2, '4', '2', 0, 0,             /* owner "42" */
        0, 0, 0, 4, '4', '2', '4', '2',         /* group "4242" */
        0, 0, 0, 0,                             /* atime: server time */
        0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 20, /* mtime: client time 10.000000020 */
    };
    assert_int_equal(fa.attr_vals.attrlist4_len, sizeof(expect));
    assert_memory_equal(fa.attr_vals.attrlist4_val, expect, sizeof(expect));
    nc_compound_free(&cp);
}

static void test_fh_equal_and_hash(void **state)
{
    struct nc_fh a = {.len = 3, .data = {1, 2, 3}};
    struct nc_fh b = a;
    struct nc_fh c = {.len = 3, .data = {1, 2, 4}};
    struct nc_fh d = {.len = 2, .data = {1, 2}};
    assert_true(nc_fh_equal(&a, &b));
    assert_false(nc_fh_equal(&a, &c));
    assert_false(nc_fh_equal(&a, &d));
    assert_int_equal(nc_fh_hash(&a), nc_fh_hash(&b));
    assert_int_not_equal(nc_fh_hash(&a), nc_fh_hash(&c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_standard),
        cmocka_unit_test(test_decode_truncated_is_error),
        cmocka_unit_test(test_decode_unknown_attribute_is_error),
        cmocka_unit_test(test_encode_roundtrip_order),
        cmocka_unit_test(test_fh_equal_and_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
