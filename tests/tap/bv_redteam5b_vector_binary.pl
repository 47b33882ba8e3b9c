# Red-team round 5b (bv_vector): hostile binary input (COPY ... FORMAT
# binary, the path a driver's binary protocol takes too).  docs/bv_vector.md
# promises: binary form with a non-zero reserved field or the wrong length
# 22P03, no values or a bad size 22023, more than 16,000 dimensions 54000,
# NaN and infinities 22003, the wrong size for vector(n) 22026.  Every case
# held in this round but one:
#
# Finding 12: a binary vector shorter than its 4-byte header (2 bytes) is
#   refused with 08P01 "insufficient data left in message" (a protocol
#   violation, PostgreSQL's message-buffer check) instead of 22P03 with a
#   hint: vector_recv read the header before checking the length.  Fixed:
#   it checks that the 4 header bytes are there first.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red5bvbin');
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

sql(q{CREATE TABLE vb (v bv_vector.vector); CREATE TABLE vb2 (v bv_vector.vector(2));});

# One row of one column in PostgreSQL's binary COPY format.
sub copy_file
{
	my ($name, $payload) = @_;
	my $data = "PGCOPY\n\xff\r\n\0" . pack('NN', 0, 0)
	  . pack('n', 1) . pack('N', length($payload)) . $payload . pack('n', 0xffff);
	my $file = $node->basedir . "/$name.bin";
	open my $fh, '>:raw', $file or die "cannot write $file: $!";
	print $fh $data;
	close $fh;
	chmod 0644, $file;
	return $file;
}
sub bvec { my ($dim, $reserved, @x) = @_; return pack('nn', $dim & 0xffff, $reserved) . join('', map { pack('f>', $_) } @x); }

my @cases = (
	[ 'no dimensions', bvec(0, 0), '22023' ],
	[ 'negative dimensions', bvec(-1, 0, 1), '22023' ],
	[ '20,000 dimensions', bvec(20000, 0, (1) x 20000), '54000' ],
	[ 'fewer values than dimensions', bvec(3, 0, 1, 2), '22P03' ],
	[ 'more values than dimensions', bvec(1, 0, 1, 2), '22P03' ],
	[ 'NaN', bvec(2, 0, 9**9**9 / 9**9**9, 1), '22003' ],
	[ 'infinity', bvec(2, 0, 9**9**9, 1), '22003' ],
	[ 'a reserved field of 7', bvec(2, 7, 1, 2), '22P03' ],
);
for my $c (@cases)
{
	my ($name, $payload, $state) = @$c;
	(my $fname = $name) =~ s/\W+/_/g;
	my $file = copy_file($fname, $payload);
	my ($rc, undef, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\nCOPY vb FROM '$file' WITH (FORMAT binary)");
	like($err, qr/ERROR:\s+$state:/, "binary vector with $name: $state");
}
{
	my $file = copy_file('truncated', pack('n', 2));
	my ($rc, undef, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\nCOPY vb FROM '$file' WITH (FORMAT binary)");
	like($err, qr/ERROR:\s+22P03:/, 'binary vector with a truncated header: 22P03');
	like($err, qr/HINT:/, '... with a hint');
	$file = copy_file('empty', '');
	($rc, undef, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\nCOPY vb FROM '$file' WITH (FORMAT binary)");
	like($err, qr/ERROR:\s+22P03:/, 'binary vector of 0 bytes: 22P03');
	$file = copy_file('three_bytes', pack('nC', 1, 0));
	($rc, undef, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\nCOPY vb FROM '$file' WITH (FORMAT binary)");
	like($err, qr/ERROR:\s+22P03:/, 'binary vector of 3 bytes: 22P03');
}
my $ok = copy_file('ok', bvec(2, 0, 1, 2.5));
sql("COPY vb FROM '$ok' WITH (FORMAT binary)");
is(sql('SELECT v::text FROM vb'), '[1,2.5]', 'a well-formed binary vector is read');
my $three = copy_file('three', bvec(3, 0, 1, 2, 3));
my ($rc, undef, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\nCOPY vb2 FROM '$three' WITH (FORMAT binary)");
like($err, qr/ERROR:\s+22026:/, 'three values into vector(2) through binary COPY: 22026');
is(sql('SELECT count(*) FROM vb2'), '0', 'nothing was stored');

done_testing();
