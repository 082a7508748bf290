# Parley — one non-recursive Makefile.
#   make                 build ./parley (debug variant)
#   make BUILD=release   hardened optimised build
#   make test            unit + integration tests on the ASan+UBSan build
#   make test BUILD=tsan threaded parts under ThreadSanitizer
#   make run / stop      local PostgreSQL under ./var and parley serve
#   make lint format fuzz bench clean deps

BUILD  ?= debug
B      := build/$(BUILD)
CC     ?= cc
PKGS   := libmicrohttpd libcurl libpq libcjson openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WERROR ?= -Werror

WARN := -Wall -Wextra -Wpedantic $(WERROR) -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wmissing-declarations -Wold-style-definition \
	-Wpointer-arith -Wcast-align -Wwrite-strings -Wformat=2 -Wundef -Wvla \
	-Wdouble-promotion -Wimplicit-fallthrough -Wredundant-decls \
	-Wnested-externs -Werror=implicit-function-declaration -Wconversion \
	-Wsign-conversion
ifeq ($(findstring clang,$(shell $(CC) --version 2>/dev/null)),)
WARN += -Wlogical-op -Wduplicated-cond -Wduplicated-branches -Wrestrict \
	-Wjump-misses-init -Walloc-zero
endif

CFLAGS_COMMON := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I. \
	$(PKG_CFLAGS) $(WARN) -pthread -MMD -MP
LDLIBS := $(PKG_LIBS) -pthread -lm

ifeq ($(BUILD),debug)
CFLAGS_V := -O0 -g
else ifeq ($(BUILD),release)
CFLAGS_V := -O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong \
	-Werror=format-security -fPIE
LDFLAGS_V := -pie -Wl,-z,relro -Wl,-z,now
# The parley binary allocates through tcmalloc (Debian libtcmalloc-minimal4,
# linked by its file name: no -dev package needed). Against glibc's malloc,
# LLM 0 ms: 16 % less of Parley's CPU per reply, +9 % replies/s (medians of
# 10 pairs); idle RSS 14 -> 19.5 MB (docs/performance-history.md, "tcmalloc").
# MALLOC=glibc opts out.
MALLOC ?= tcmalloc
ifeq ($(MALLOC),tcmalloc)
MALLOC_LIBS := -Wl,--push-state,--no-as-needed -l:libtcmalloc_minimal.so.4 \
	-Wl,--pop-state
else ifneq ($(MALLOC),glibc)
$(error unknown MALLOC=$(MALLOC): use tcmalloc or glibc)
endif
else ifeq ($(BUILD),asan)
CFLAGS_V := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=all
LDFLAGS_V := -fsanitize=address,undefined
else ifeq ($(BUILD),tsan)
CFLAGS_V := -O1 -g -fsanitize=thread
LDFLAGS_V := -fsanitize=thread
else
$(error unknown BUILD=$(BUILD): use debug, release, asan or tsan)
endif

CFLAGS  := $(CFLAGS_COMMON) $(CFLAGS_V) $(EXTRA_CFLAGS)
LDFLAGS := $(LDFLAGS_V)

LIB_SRCS := $(wildcard core/*.c adapters/*.c inference/*.c analytics/*.c) \
	$(filter-out gateway/main.c,$(wildcard gateway/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o) $(B)/gen/migrations.o
MIGRATIONS := $(sort $(wildcard migrations/*.sql))
# Renaming or removing a migration must regenerate the embedded list too.
MIG_LIST := $(B)/gen/migrations.list
# $(call stamp,FILE,TEXT): rewrite FILE only when TEXT differs from it, so
# that what depends on FILE is rebuilt exactly when TEXT changes.
stamp = $(shell mkdir -p $(dir $(1)) && (echo "$(2)" | cmp -s - $(1) || \
	echo "$(2)" > $(1)))
$(call stamp,$(MIG_LIST),$(MIGRATIONS))
MAIN_OBJ := $(B)/gateway/main.o
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)
FAKE_SRCS := $(wildcard tests/fakes/*.c)
FAKE_BINS := $(FAKE_SRCS:tests/fakes/%.c=$(B)/tests/%)

.PHONY: all build tests deps test unit integration run stop lint format \
	format-check fuzz bench clean parley
all: parley

build: $(B)/parley

parley: $(B)/parley
	@ln -sf $(B)/parley parley

# Changing MALLOC must relink the binary.
MALLOC_STAMP := $(B)/gen/malloc.stamp
$(call stamp,$(MALLOC_STAMP),$(MALLOC))

$(B)/parley: $(MAIN_OBJ) $(B)/libparley.a $(MALLOC_STAMP)
	$(CC) $(LDFLAGS) -o $@ $(MAIN_OBJ) $(B)/libparley.a $(LDLIBS) $(MALLOC_LIBS)

$(B)/libparley.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/gen/migrations.c: $(MIGRATIONS) $(MIG_LIST) scripts/embed-migrations.sh
	@mkdir -p $(@D)
	scripts/embed-migrations.sh $@ $(MIGRATIONS)

$(B)/gen/migrations.o: $(B)/gen/migrations.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/tests/test_%: tests/unit/test_%.c $(B)/libparley.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(B)/libparley.a $(LDFLAGS) $(LDLIBS) -lcmocka

$(B)/tests/%: tests/fakes/%.c $(B)/libparley.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(B)/libparley.a $(LDFLAGS) $(LDLIBS)

tests: $(B)/parley $(UNIT_BINS) $(FAKE_BINS)

deps:
	@scripts/deps.sh

# The one test command (README, .ci/run): unit and integration tests on the
# ASan+UBSan build, ending with one "N passed, N failed" line.
test: deps
	@$(MAKE) --no-print-directory BUILD=$(if $(filter debug,$(BUILD)),asan,$(BUILD)) tests
	@scripts/run-tests.sh $(if $(filter debug,$(BUILD)),asan,$(BUILD))

unit: deps
	@$(MAKE) --no-print-directory BUILD=$(if $(filter debug,$(BUILD)),asan,$(BUILD)) tests
	@SUITES=unit scripts/run-tests.sh $(if $(filter debug,$(BUILD)),asan,$(BUILD))

run: deps parley
	@scripts/run.sh

stop:
	@scripts/pg-local.sh stop

lint:
	@scripts/lint.sh

format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

fuzz:
	@scripts/fuzz.sh

bench: deps
	@$(MAKE) --no-print-directory BUILD=release tests
	@scripts/bench.sh

clean:
	rm -rf build parley

-include $(LIB_OBJS:.o=.d) $(MAIN_OBJ:.o=.d) $(FAKE_BINS:=.d) $(UNIT_BINS:=.d)
