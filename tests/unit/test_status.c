/* The NFS4ERR -> errno map: known statuses, names, and unknown -> EIO. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "nfsclient/nc_internal.h"

#include <errno.h>
#include <string.h>

static void test_ok_is_zero(void **state)
{
    assert_int_equal(nc_status_to_errno(NFS4_OK), 0);
}

static void test_common_statuses(void **state)
{
    struct {
        int status;
        int err;
    } cases[] = {
        {NFS4ERR_PERM, -EPERM},         {NFS4ERR_NOENT, -ENOENT},
        {NFS4ERR_ACCESS, -EACCES},      {NFS4ERR_EXIST, -EEXIST},
        {NFS4ERR_NOTDIR, -ENOTDIR},     {NFS4ERR_ISDIR, -EISDIR},
        {NFS4ERR_NOSPC, -ENOSPC},       {NFS4ERR_ROFS, -EROFS},
        {NFS4ERR_NAMETOOLONG, -ENAMETOOLONG}, {NFS4ERR_NOTEMPTY, -ENOTEMPTY},
        {NFS4ERR_DQUOT, -EDQUOT},       {NFS4ERR_STALE, -ESTALE},
        {NFS4ERR_FBIG, -EFBIG},         {NFS4ERR_DENIED, -EAGAIN},
        {NFS4ERR_DEADLOCK, -EDEADLK},   {NFS4ERR_NOTSUPP, -EOPNOTSUPP},
        {NFS4ERR_XDEV, -EXDEV},         {NFS4ERR_MLINK, -EMLINK},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(nc_status_to_errno(cases[i].status), cases[i].err);
}

static void test_every_known_status_is_negative(void **state)
{
    /* Every status in RFC 7530 maps to a negative errno and has a name. */
    for (int st = 1; st < 20000; st++) {
        const char *name = nc_status_name(st);
        if (!name)
            continue;
        assert_true(nc_status_to_errno(st) < 0);
        assert_true(strncmp(name, "NFS4ERR_", 8) == 0);
    }
    assert_string_equal(nc_status_name(NFS4ERR_STALE), "NFS4ERR_STALE");
    assert_string_equal(nc_status_name(NFS4ERR_CB_PATH_DOWN), "NFS4ERR_CB_PATH_DOWN");
}

static void test_unknown_is_eio(void **state)
{
    assert_null(nc_status_name(12345));
    assert_int_equal(nc_status_to_errno(12345), -EIO);
    assert_int_equal(nc_status_to_errno(12345), -EIO); /* second time: logged once, same answer */
    assert_int_equal(nc_status_to_errno(-7), -EIO);
}

static void test_seqid_rules(void **state)
{
    /* RFC 7530 9.1.7: these do not advance an owner's seqid. */
    assert_false(nc_seqid_advances(NFS4ERR_BAD_SEQID));
    assert_false(nc_seqid_advances(NFS4ERR_STALE_CLIENTID));
    assert_false(nc_seqid_advances(NFS4ERR_BADZDR));
    assert_false(nc_seqid_advances(-1));
    /* ... and everything else the server executed does. */
    assert_true(nc_seqid_advances(NFS4_OK));
    assert_true(nc_seqid_advances(NFS4ERR_NOENT));
    assert_true(nc_seqid_advances(NFS4ERR_DENIED));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_is_zero),
        cmocka_unit_test(test_common_statuses),
        cmocka_unit_test(test_every_known_status_is_negative),
        cmocka_unit_test(test_unknown_is_eio),
        cmocka_unit_test(test_seqid_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
