# bv_audit WAL mode (#19): the model test of tests/tap/bv_audit_model.pl
# with the table switched between trigger and WAL mode at random points of
# the run; every reading must still equal the model (nothing lost or
# recorded twice at a switch).  BV_MODEL_SEED / BV_MODEL_STEPS as there.
use strict;
use warnings;
use FindBin;
# Loaded here, at compile time: their INIT blocks set up the test run.
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

$ENV{BV_MODEL_MODE} = 'wal';
$ENV{BV_MODEL_SWITCH} = 1;
do "$FindBin::Bin/bv_audit_model.pl" or die($@ || $!);
