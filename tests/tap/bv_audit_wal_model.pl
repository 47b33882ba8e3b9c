# bv_audit WAL mode (#19) against the model of tests/tap/bv_audit_model.pl:
# the same seeded workload of DML and DDL, the table recorded from the WAL
# by the bv_audit WAL worker.  BV_MODEL_SEED / BV_MODEL_STEPS as there.
use strict;
use warnings;
use FindBin;
# Loaded here, at compile time: their INIT blocks set up the test run.
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

$ENV{BV_MODEL_MODE} = 'wal';
$ENV{BV_MODEL_SWITCH} = 0;
do "$FindBin::Bin/bv_audit_model.pl" or die($@ || $!);
