# BvTest: BitVelocity's helpers for TAP tests on PostgreSQL::Test::Cluster.
#
#   my $node = BvTest::new_node('primary');           # suite settings, started
#   BvTest::create_suite_db($node);                   # db "bitvelocity" + extensions
#
# The node gets tools/bitvelocity.conf (wal_level=logical, wal2json allowed,
# pg_cron and the suite preloaded), the same settings as `make run`.
package BvTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

# Root of the copied source tree (set by tools/test.sh).
sub src { return $ENV{BV_SRC} // die "BV_SRC is not set; run through tools/test.sh\n"; }

sub suite_conf
{
	my $file = src() . '/tools/bitvelocity.conf';
	open my $fh, '<', $file or die "cannot read $file: $!";
	local $/;
	return <$fh>;
}

# The suite's extensions in dependency order, as tools/lib.sh computes them.
sub extensions
{
	my $src = src();
	my @ext = split /\s+/,
	  `bash -c 'source "$src/tools/lib.sh"; bv_extensions_ordered'`;
	return grep { length } @ext;
}

sub new_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	$node->append_conf('postgresql.conf', suite_conf());
	$node->append_conf('postgresql.conf', $opts{extra_conf}) if $opts{extra_conf};
	$node->start unless $opts{no_start};
	return $node;
}

sub create_suite_db
{
	my ($node, @extra) = @_;
	$node->safe_psql('postgres', 'CREATE DATABASE bitvelocity');
	$node->safe_psql('bitvelocity', qq{CREATE EXTENSION "$_" CASCADE})
	  for ('pg_cron', extensions(), @extra);
	return;
}

1;
