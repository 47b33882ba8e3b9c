# extensions/flags.mk: compiler settings shared by every C part of the suite.
# Included by each extension's Makefile (through extension.mk) and by the
# internal library; it ends by including PGXS.

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config

# Warnings are errors.  -Wextra's unused-parameter and missing-field-
# initializer warnings fire on PostgreSQL's own idioms (PG_FUNCTION_ARGS,
# "= {0}"), so those two are left off, as most extensions do.
PG_CFLAGS += -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wno-sign-compare

# BV_ASSERTS=1 builds with assertions on (the sanitizer/valgrind target).
ifeq ($(BV_ASSERTS),1)
PG_CPPFLAGS += -DUSE_ASSERT_CHECKING
endif

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
