#!/bin/sh
# Runs efsfuse under valgrind for `make valgrind`: any memory error or leak
# makes it exit 99, which the integration fixtures report as a failure.
here=$(dirname "$0")
exec valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --show-leak-kinds=definite "${EFSFUSE_REAL_BIN:-$here/../build/efsfuse}" "$@"
