# extensions/extension.mk: the PGXS build of one BitVelocity extension.
#
# An extension's Makefile sets EXT (its name), OBJS and, if it needs external
# libraries, EXT_LIBS; then includes this file.  The extension's SQL scripts
# and control file are found by name in the top-level sql/ and control/
# folders, so one name finds everything:
#   extensions/$(EXT)/   C sources          sql/$(EXT)/   install/upgrade SQL
#   control/$(EXT).control                  tests/*/$(EXT)*  tests

# Works from extensions/<ext>/ and bgworkers/<part>/ alike.
COMMON_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))/common

MODULE_big = $(EXT)
MODULEDIR = extension
DATA = $(wildcard ../../sql/$(EXT)/$(EXT)--*.sql) ../../control/$(EXT).control

PG_CPPFLAGS += -I$(COMMON_DIR)
SHLIB_LINK += $(COMMON_DIR)/libbvcommon.a $(EXT_LIBS)

include $(dir $(lastword $(MAKEFILE_LIST)))flags.mk

$(shlib): $(COMMON_DIR)/libbvcommon.a

# PGXS tracks no header dependencies here (PostgreSQL was not configured
# with --enable-depend): every object depends on the extension's own
# headers and the common library's.
$(OBJS): $(wildcard *.h) $(wildcard $(COMMON_DIR)/*.h)
