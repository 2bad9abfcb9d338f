# efsfuse — see README.md. `make` builds build/efsfuse; `make test` installs
# what is missing (Debian packages), builds and runs every test.

VERSION := 0.1.0
PREFIX ?= /usr/local
DESTDIR ?=
SANITIZE ?=
# Sanitized builds live beside the normal one so both can be kept.
BUILD ?= build$(if $(SANITIZE),-$(subst $(comma),-,$(SANITIZE)))
comma := ,

CC ?= cc
PKGS := fuse3 libnfs libcurl libcjson
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
          -D_GNU_SOURCE -DEFSFUSE_VERSION='"$(VERSION)"' -MMD -MP \
          -DEFSFUSE_LIBNFS_VERSION='"$(shell pkg-config --modversion libnfs 2>/dev/null)"' \
          -I. $(PKG_CFLAGS)
ifneq ($(SANITIZE),)
# libnfs's XDR decoder hands out result arrays (COMPOUND4res.resarray) with
# 4-byte alignment; reading them is fine on x86-64 but trips UBSan's
# alignment check in our code. Every other check stays fatal.
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
          $(if $(findstring undefined,$(SANITIZE)),-fno-sanitize=alignment)
LDFLAGS += -fsanitize=$(SANITIZE)
endif
LDLIBS += $(PKG_LIBS)

COMMON_SRC := $(wildcard common/*.c)
NFS_SRC := $(wildcard nfsclient/*.c)
FS_SRC := $(wildcard fuse/*.c)
SIDECAR_SRC := $(filter-out sidecar/main.c,$(wildcard sidecar/*.c))
LIB_SRC := $(COMMON_SRC) $(NFS_SRC) $(FS_SRC) $(SIDECAR_SRC)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

FAULT_BIN := $(BUILD)/fault/tcpproxy

PYTEST := /usr/bin/python3 -m pytest

.PHONY: all deps run stop test unit integration test-asan fault bench bench-quick install uninstall \
        clean format valgrind

all: $(BUILD)/efsfuse

$(BUILD)/efsfuse: $(BUILD)/sidecar/main.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# $^ also holds the headers the .d files list; only sources and objects are linked.
$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS) -lcmocka

$(BUILD)/bench/%: tests/bench/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

# Standalone test tool: links nothing of ours.
$(BUILD)/fault/%: tests/fault/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

deps:
	@scripts/deps.sh

# Builds, starts a local nfs-ganesha on loopback exporting ./var/export and
# mounts it at ./mnt. `make stop` undoes it.
run: deps all
	@scripts/run.sh start $(BUILD)/efsfuse

stop:
	@scripts/run.sh stop

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: all
	EFSFUSE_BIN=$(abspath $(BUILD)/efsfuse) $(PYTEST) -q tests/integration $(PYTEST_ARGS)

# The integration suite once more with AddressSanitizer and UBSan.
test-asan:
	$(MAKE) SANITIZE=address,undefined integration
	$(MAKE) SANITIZE=address,undefined fault FAULT_K="not partition and not black_hole"

# Connection faults (resets, lost replies, black holes, partitions) and the
# userspace TCP delay/fault proxy they and the benchmarks use. FAULT_K selects
# tests (pytest -k): under the sanitizers, the black hole and partition tests
# would only wait 50 s more for code the other tests run too.
fault: all $(FAULT_BIN)
	EFSFUSE_BIN=$(abspath $(BUILD)/efsfuse) TCPPROXY_BIN=$(abspath $(FAULT_BIN)) \
	    $(PYTEST) -q tests/fault $(if $(FAULT_K),-k "$(FAULT_K)") $(PYTEST_ARGS)

# Benchmarks against the NFS and FUSE ceilings and a local disk (see README).
BENCH_TOOLS = $(BUILD)/efsfuse $(BENCH_BIN) $(FAULT_BIN)
bench: deps $(BENCH_TOOLS)
	BUILD=$(BUILD) TCPPROXY_BIN=$(abspath $(FAULT_BIN)) /usr/bin/python3 tests/bench/run_bench.py \
	    $(if $(QUICK),--quick --out $(BUILD)/bench-quick,--out $(BUILD)/bench-results) $(BENCH_ARGS)

bench-quick:
	$(MAKE) bench QUICK=1

# Unit tests and the file-operation and data tests with efsfuse under valgrind.
valgrind: all $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do valgrind --quiet --error-exitcode=99 --leak-check=full $$t >/dev/null; echo "valgrind clean: $$t"; done
	EFSFUSE_BIN=$(abspath tests/valgrind-efsfuse.sh) EFSFUSE_REAL_BIN=$(abspath $(BUILD)/efsfuse) \
	    $(PYTEST) -q tests/integration/test_files.py tests/integration/test_errnos.py \
	    tests/integration/test_data.py $(PYTEST_ARGS)

test: deps
	$(MAKE) all unit
	$(MAKE) integration
	$(MAKE) fault
	$(MAKE) test-asan
	$(MAKE) valgrind
	@# The benchmark once, small, as a smoke test that it runs end to end
	@# (--check fails on a missing figure; speed is never judged in tests).
	$(MAKE) bench QUICK=1 BENCH_ARGS=--check

# mount(8) looks for helpers in /sbin only, whatever PREFIX is.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/sbin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 $(BUILD)/efsfuse $(DESTDIR)$(PREFIX)/bin/efsfuse
	install -m 0755 scripts/mount.efsfuse $(DESTDIR)/sbin/mount.efsfuse
	install -m 0755 scripts/mount.efsfuse $(DESTDIR)/sbin/mount.fuse.efsfuse
	install -m 0644 doc/efsfuse.1 $(DESTDIR)$(PREFIX)/share/man/man1/efsfuse.1

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/efsfuse $(DESTDIR)/sbin/mount.efsfuse \
	      $(DESTDIR)/sbin/mount.fuse.efsfuse $(DESTDIR)$(PREFIX)/share/man/man1/efsfuse.1

format:
	clang-format -i $(wildcard */*.c */*.h tests/*/*.c)

clean:
	rm -rf build build-*

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
