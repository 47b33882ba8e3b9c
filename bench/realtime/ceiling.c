/*
 * ceiling.c: the ceiling of bench/realtime.sh, a minimal libwebsockets
 * broadcast server with no database: the most a single lws thread can
 * deliver on this machine with the same client and message size.
 *
 *   ceiling PORT N MESSAGES SIZE
 *
 * Accepts WebSocket connections on 127.0.0.1:PORT; each gets a
 * {"type":"subscribed"} reply (so the load client counts it as the gateway
 * would).  Once N clients are in, it broadcasts MESSAGES messages shaped
 * like the gateway's ({"type":"message",...,"payload":{"t":..,"pad":..}},
 * SIZE bytes of padding) to all of them as fast as the sockets take them:
 * each client writes the messages it has not written yet when lws says it
 * is writable.  Exits when every client has been written every message.
 *
 * Memory: one preformatted message (rewritten with the send time); per
 * connection a counter.  Single-threaded.
 */
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>

typedef struct Sess
{
	int sent;
	int hello;
} Sess;

static int nclients, want, messages, size, done_clients, started;
static unsigned char *buf;
static struct lws_context *ctx;

static double
now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec * 1e6 + tv.tv_usec;
}

static int
callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	Sess *s = (Sess *) user;

	(void) in;
	(void) len;
	switch (reason)
	{
		case LWS_CALLBACK_ESTABLISHED:
			nclients++;
			s->hello = 1;
			lws_callback_on_writable(wsi);
			if (nclients == want)
			{
				started = 1;
				lws_callback_on_writable_all_protocol(ctx, lws_get_protocol(wsi));
			}
			break;
		case LWS_CALLBACK_SERVER_WRITEABLE:
			if (s->hello)
			{
				static const char hello[] = "{\"type\":\"subscribed\",\"topic\":\"bench\"}";
				unsigned char b[LWS_PRE + sizeof(hello)];

				memcpy(b + LWS_PRE, hello, sizeof(hello) - 1);
				s->hello = 0;
				if (lws_write(wsi, b + LWS_PRE, sizeof(hello) - 1, LWS_WRITE_TEXT) < 0)
					return -1;
			}
			while (started && s->sent < messages && !lws_send_pipe_choked(wsi))
			{
				int n = snprintf((char *) buf + LWS_PRE, 200,
								 "{\"type\":\"message\",\"topic\":\"bench\",\"event\":\"e\","
								 "\"id\":\"0/0-%d\",\"payload\":{\"t\":%.0f,\"pad\":\"",
								 s->sent, now_us());

				memset(buf + LWS_PRE + n, 'x', size);
				memcpy(buf + LWS_PRE + n + size, "\"}}", 3);
				if (lws_write(wsi, buf + LWS_PRE, n + size + 3, LWS_WRITE_TEXT) < 0)
					return -1;
				if (++s->sent == messages)
					done_clients++;
			}
			if (started && s->sent < messages)
				lws_callback_on_writable(wsi);
			break;
		default:
			break;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct lws_context_creation_info info;
	struct lws_protocols protocols[] = {{"bench", callback, sizeof(Sess), 4096, 0, NULL, 0},
										{NULL, NULL, 0, 0, 0, NULL, 0}};
	struct rlimit rl;

	if (argc < 5)
	{
		fprintf(stderr, "usage: ceiling PORT N MESSAGES SIZE\n");
		return 2;
	}
	want = atoi(argv[2]);
	messages = atoi(argv[3]);
	size = atoi(argv[4]);
	buf = malloc(LWS_PRE + size + 256);
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
	{
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	lws_set_log_level(LLL_ERR, NULL);
	memset(&info, 0, sizeof(info));
	info.port = atoi(argv[1]);
	info.iface = "127.0.0.1";
	info.protocols = protocols;
	info.fd_limit_per_thread = want + 64;
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
	info.gid = -1;
	info.uid = -1;
	ctx = lws_create_context(&info);
	if (!ctx)
		return 1;
	fprintf(stderr, "ceiling: listening on %d\n", info.port);
	while (!(started && done_clients == want))
		lws_service(ctx, 0);
	/* let the last writes drain */
	{
		struct timeval tv;
		double end;

		gettimeofday(&tv, NULL);
		end = tv.tv_sec + 2.0;
		do
		{
			lws_service(ctx, 0);
			gettimeofday(&tv, NULL);
		} while (tv.tv_sec < end);
	}
	lws_context_destroy(ctx);
	return 0;
}
