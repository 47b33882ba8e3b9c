/*
 * loadclient.c: the load client of bench/realtime.sh (make bench-realtime),
 * a libwebsockets WebSocket client holding many connections in one thread.
 *
 *   loadclient HOST PORT PATH N MODE SECONDS [EXPECT]
 *
 * Opens N connections to ws://HOST:PORT/PATH (PATH carries the token and
 * topics; "@FILE": connection i uses line i modulo the file's lines, e.g.
 * one token per role) and serves them all from one lws_service() loop.
 *   MODE idle:   print "connected N" once all have their "subscribed" reply
 *                (or "authenticated"), then hold them SECONDS seconds.
 *   MODE fanout: print "ready" once all are subscribed, then count the
 *                "message" frames until EXPECT deliveries arrived in total
 *                or SECONDS passed.  Each payload carries "t": the sender's
 *                clock in microseconds since the epoch; the latency is the
 *                receipt time minus t (same machine, same clock).
 * At the end it prints one line of "key=value" figures: connected,
 * subscribed, received, first_s/last_s (receipt times), rate_per_s
 * (received over the span from the first to the last receipt), p50_ms,
 * p99_ms.  Progress and errors on stderr.
 *
 * Connecting: at most INFLIGHT handshakes (upgrade + the gateway's token
 * check and join) are outstanding at once, as a real fleet of clients
 * arrives spread out; opening all N at once made the single-threaded
 * gateway answer the last ones after lws's client timeout, and a connect
 * that failed at once (lws_client_connect_via_info() returning NULL) was
 * neither retried nor counted, so the client waited for its deadline.
 * Both are retried up to 5 times; progress goes to stderr every 5 s.
 *
 * Memory: a fixed array of per-connection state and of latency samples
 * (at most 4M); everything single-threaded.
 */
#define _GNU_SOURCE
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>

typedef struct Conn
{
	struct lws *wsi;
	int established;
	int closed;
	int attempts;
} Conn;

static Conn *conns;
static int nconns, nestablished, nsubscribed, nclosed, nerrors;
static long long received, expect;
static double first_s, last_s;
static float *lat_ms;
static long long nlat, maxlat = 4 * 1024 * 1024;
static int fanout, ready_printed;
static char **paths;
static int npaths;
static int *retry, nretry;
static int nclosed_after_established;

#define INFLIGHT 256 /* handshakes outstanding at once */

static double
now_s(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

static void
on_text(const char *in, size_t len)
{
	const char *t;

	if (len > 25 && memmem(in, len > 40 ? 40 : len, "\"type\":\"subscribed\"", 19))
	{
		nsubscribed++;
		return;
	}
	if (!memmem(in, len > 40 ? 40 : len, "\"type\":\"message\"", 16))
		return;
	received++;
	last_s = now_s();
	if (received == 1)
		first_s = last_s;
	t = memmem(in, len, "\"t\":", 4);
	if (t && nlat < maxlat)
	{
		double sent_us = strtod(t + 4, NULL);

		lat_ms[nlat++] = (float) ((last_s * 1e6 - sent_us) / 1000.0);
	}
}

static int
callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	Conn *c = (Conn *) lws_get_opaque_user_data(wsi);

	(void) user;

	switch (reason)
	{
		case LWS_CALLBACK_CLIENT_ESTABLISHED:
			nestablished++;
			if (c)
				c->established = 1;
			break;
		case LWS_CALLBACK_CLIENT_RECEIVE:
			/* frames are small here: one callback per frame (checked) */
			if (!lws_is_first_fragment(wsi) || !lws_is_final_fragment(wsi))
				break;
			on_text((const char *) in, len);
			break;
		case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		{
			static int shown;

			/* the server's close code and reason: say why (the first few) */
			if (len >= 2 && shown++ < 5)
				fprintf(stderr, "loadclient: closed by the server: %d %.*s\n",
						((unsigned char *) in)[0] << 8 | ((unsigned char *) in)[1], (int) len - 2,
						(char *) in + 2);
			break;
		}
		case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
			nerrors++;
			if (nerrors < 5)
				fprintf(stderr, "loadclient: connection error: %s\n", in ? (char *) in : "?");
			/* fall through */
		case LWS_CALLBACK_CLIENT_CLOSED:
			if (c && !c->closed)
			{
				c->closed = 1;
				/* a handshake that failed (a busy server): try again */
				if (!c->established && c->attempts < 5)
					retry[nretry++] = (int) (c - conns);
				else
				{
					nclosed++;
					if (c->established)
						nclosed_after_established++;
				}
			}
			break;
		default:
			break;
	}
	return 0;
}

static int
cmp_float(const void *a, const void *b)
{
	float x = *(const float *) a, y = *(const float *) b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	struct lws_context_creation_info info;
	struct lws_context *ctx;
	struct lws_protocols protocols[] = {{"bench", callback, 0, 65536, 0, NULL, 0},
										{NULL, NULL, 0, 0, 0, NULL, 0}};
	struct rlimit rl;
	const char *host, *path;
	int port, i, seconds, started = 0;
	double t0, deadline;

	if (argc < 7)
	{
		fprintf(stderr, "usage: loadclient HOST PORT PATH N idle|fanout SECONDS [EXPECT]\n");
		return 2;
	}
	host = argv[1];
	port = atoi(argv[2]);
	path = argv[3];
	nconns = atoi(argv[4]);
	fanout = strcmp(argv[5], "fanout") == 0;
	seconds = atoi(argv[6]);
	expect = argc > 7 ? atoll(argv[7]) : 0;
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
	{
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	conns = calloc(nconns, sizeof(Conn));
	retry = calloc(nconns, sizeof(int));
	if (path[0] == '@')
	{
		FILE *f = fopen(path + 1, "r");
		char line[16384];

		if (f == NULL)
			return 2;
		paths = calloc(nconns, sizeof(char *));
		while (npaths < nconns && fgets(line, sizeof(line), f))
		{
			line[strcspn(line, "\n")] = '\0';
			if (line[0])
				paths[npaths++] = strdup(line);
		}
		fclose(f);
		if (npaths == 0)
			return 2;
	}
	lat_ms = malloc(sizeof(float) * maxlat);
	lws_set_log_level(LLL_ERR, NULL);
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.fd_limit_per_thread = nconns + 64;
	info.gid = -1;
	info.uid = -1;
	ctx = lws_create_context(&info);
	if (!ctx)
		return 1;
	t0 = now_s();
	deadline = t0 + 600;
	{
		double next_progress = t0 + 5;

		while (now_s() < deadline)
		{
			/* connect a few at a time, with a bounded number of handshakes in flight */
			for (i = 0; (started < nconns || nretry > 0) && i < 50 &&
						(started - nretry) - nsubscribed - nclosed < INFLIGHT;
				 i++)
			{
				struct lws_client_connect_info ci;
				int k = nretry > 0 ? retry[--nretry] : started++;

				memset(&ci, 0, sizeof(ci));
				ci.context = ctx;
				ci.address = host;
				ci.port = port;
				ci.path = npaths ? paths[k % npaths] : path;
				ci.host = host;
				ci.origin = host;
				ci.protocol = NULL;
				ci.opaque_user_data = &conns[k];
				conns[k].closed = 0;
				conns[k].attempts++;
				conns[k].wsi = lws_client_connect_via_info(&ci);
				if (conns[k].wsi == NULL)
				{
					/* failed at once (no descriptor, no port): retry, or give up */
					conns[k].closed = 1;
					nerrors++;
					if (conns[k].attempts < 5)
						retry[nretry++] = k;
					else
						nclosed++;
					break;
				}
			}
			lws_service(ctx, 0);
			if (nsubscribed + nclosed >= nconns && started == nconns && nretry == 0)
				break;
			if (now_s() >= next_progress)
			{
				next_progress += 5;
				fprintf(stderr, "loadclient: %.0f s: started %d, established %d, subscribed %d, closed %d (%d after the handshake), errors %d, retrying %d\n",
						now_s() - t0, started, nestablished, nsubscribed, nclosed, nclosed_after_established, nerrors, nretry);
			}
		}
	}
	if (!fanout)
	{
		printf("connected %d\n", nsubscribed);
		fflush(stdout);
		deadline = now_s() + seconds;
		while (now_s() < deadline)
			lws_service(ctx, 0);
	}
	else
	{
		printf("ready %d\n", nsubscribed);
		fflush(stdout);
		ready_printed = 1;
		deadline = now_s() + seconds;
		while (now_s() < deadline && (expect == 0 || received < expect))
			lws_service(ctx, 0);
	}
	qsort(lat_ms, nlat, sizeof(float), cmp_float);
	printf("connected=%d subscribed=%d errors=%d received=%lld span_s=%.3f rate_per_s=%.0f "
		   "p50_ms=%.2f p99_ms=%.2f\n",
		   nestablished, nsubscribed, nerrors, received, last_s - first_s,
		   (received > 1 && last_s > first_s) ? (received - 1) / (last_s - first_s) : 0.0,
		   nlat ? lat_ms[nlat / 2] : 0.0, nlat ? lat_ms[(long long) (nlat * 0.99)] : 0.0);
	lws_context_destroy(ctx);
	return 0;
}
