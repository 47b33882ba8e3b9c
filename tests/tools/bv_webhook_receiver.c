/*
 * bv_webhook_receiver: a webhook receiver for bv_cdc's tests, benchmarks and
 * `make run`, that checks every signature.
 *
 * An HTTP/1.1 keep-alive server (libmicrohttpd) on 127.0.0.1.  Every POST to
 * a path that does not start with "/_" is an event delivery: its
 * BV-Signature header ("t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>"
 * with one or more v1 values) must verify, with any of the secrets given
 * (--secret-file, repeatable, for secret rotation), a timestamp within
 * --tolerance seconds of now and a constant-time compare (CRYPTO_memcmp);
 * otherwise the answer is 401.  A verified event gets 200, unless the test
 * told the receiver to misbehave:
 *
 *   POST /_control?status=500&count=3     answer 500 to the next 3 verified
 *                                         events (count=-1: until reset)
 *   POST /_control?status=503&retry_after=2&count=5   with a Retry-After
 *   POST /_control?hang_ms=15000&count=1  hold the next event 15 s before
 *                                         answering (status, default 200)
 *   POST /_control?down=1 | down=0        503 to every event until down=0
 *   POST /_control?reset=1                forget all of the above (and wake
 *                                         requests that hang)
 *   GET  /_stats                          counters as JSON
 *   GET  /_health                         200
 *
 * Rules queue: each control call with status or hang_ms appends one rule
 * (reset=1 in the same call clears the queue first); events consume the
 * rule at the head.  Requests that fail verification never consume a rule.
 *
 * Output: "127.0.0.1:PORT" on stdout once listening; then, unless --quiet,
 * one short line per event.  --log FILE: one JSON line per event request
 * (received_ms, event id, status answered, verified, signature header,
 * headers, hang, body as a JSON string).  --latency FILE: for every event
 * answered 2xx, the milliseconds from the change's commit (the envelope's
 * source.ts_us) to its receipt.  Lines are written with one write(2) each
 * (O_APPEND, no fsync), so concurrent requests never interleave.
 *
 * Concurrency: one thread per connection (MHD_USE_THREAD_PER_CONNECTION):
 * with keep-alive a sender's connection keeps its thread, and a hanging
 * request blocks only its own connection, as a slow real receiver would.
 * Shared state (rules, counters, the event id sets) is guarded by one mutex,
 * held only for constant-time bookkeeping; HMACs and I/O run outside it.
 * Requests that hang wait on a condition variable, so reset and shutdown
 * release them at once.  SIGTERM/SIGINT stop the server cleanly.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MAX_SECRETS    8
#define MAX_RULES      64
#define MAX_BODY       (16 * 1024 * 1024)
#define BODY_HEADROOM  32 /* room for "<t>." in front of the body */
#define SIGNATURE_SIZE 32

/* ---- options ---- */
static struct
{
	int port;
	long tolerance;
	bool quiet;
	int nsecrets;
	char *secrets[MAX_SECRETS];
	size_t secret_len[MAX_SECRETS];
	int log_fd;
	int latency_fd;
} opt = {.port = 0, .tolerance = 300, .log_fd = -1, .latency_fd = -1};

/* ---- shared state, under state_lock ---- */
typedef struct Rule
{
	int status;      /* 0: 200 */
	long hang_ms;    /* 0: none */
	int retry_after; /* seconds, -1: no header */
	long count;      /* requests left; -1: until reset */
} Rule;

typedef struct IdSet
{
	char **slots;
	size_t size; /* power of two */
	size_t used;
} IdSet;

static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t state_cond = PTHREAD_COND_INITIALIZER;
static Rule rules[MAX_RULES];
static int nrules;
static bool down;
static long generation; /* bumped by reset and shutdown: wakes hangers */
static bool stopping;

static struct
{
	long requests, ok, verified, bad_signature, hung, in_progress, max_concurrent;
	long by_status[600];
	long controls;
} stats;

static IdSet all_ids, acked_ids;

/* ---- per-request state ---- */
typedef struct Request
{
	char *buf; /* BODY_HEADROOM bytes, then the body */
	size_t len;
	size_t cap;
	bool too_big;
} Request;

/* A growing string. */
typedef struct Buf
{
	char *data;
	size_t len;
	size_t cap;
} Buf;

static void
buf_reserve(Buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *data = realloc(b->data, cap);
	if (data == NULL)
	{
		fprintf(stderr, "bv_webhook_receiver: out of memory\n");
		abort();
	}
	b->data = data;
	b->cap = cap;
}

static void
buf_add(Buf *b, const char *s, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void
buf_addstr(Buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void
buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
buf_printf(Buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_reserve(b, (size_t) n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t) n;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	size_t len, i;
	unsigned int cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xE0) == 0xC0)
		len = 2, cp = s[0] & 0x1F;
	else if ((s[0] & 0xF0) == 0xE0)
		len = 3, cp = s[0] & 0x0F;
	else if ((s[0] & 0xF8) == 0xF0)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++)
	{
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

/* s (n bytes, any content) as a JSON string; invalid UTF-8 bytes become
 * \u00XX, so that the line always parses. */
static void
buf_json_string(Buf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t i = 0;

	buf_reserve(b, n + 2);
	buf_add(b, "\"", 1);
	while (i < n)
	{
		size_t run = i;

		/* copy plain bytes in runs */
		while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
			run++;
		if (run > i)
		{
			buf_add(b, s + i, run - i);
			i = run;
			continue;
		}
		if (p[i] == '"')
			buf_add(b, "\\\"", 2), i++;
		else if (p[i] == '\\')
			buf_add(b, "\\\\", 2), i++;
		else if (p[i] == '\n')
			buf_add(b, "\\n", 2), i++;
		else if (p[i] == '\r')
			buf_add(b, "\\r", 2), i++;
		else if (p[i] == '\t')
			buf_add(b, "\\t", 2), i++;
		else if (p[i] < 0x20)
			buf_printf(b, "\\u%04x", p[i]), i++;
		else
		{
			size_t len = utf8_len(p + i, n - i);

			if (len == 0)
				buf_printf(b, "\\u%04x", p[i]), i++;
			else
				buf_add(b, s + i, len), i += len;
		}
	}
	buf_add(b, "\"", 1);
}

static void
buf_json_or_null(Buf *b, const char *s)
{
	if (s == NULL)
		buf_addstr(b, "null");
	else
		buf_json_string(b, s, strlen(s));
}

/* One write(2) of the whole line: lines of concurrent requests never mix. */
static void
write_line(int fd, const char *s, size_t n)
{
	while (n > 0)
	{
		ssize_t w = write(fd, s, n);

		if (w < 0)
		{
			if (errno == EINTR)
				continue;
			return;
		}
		s += w;
		n -= (size_t) w;
	}
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* ---- the event id sets (open addressing, FNV-1a) ---- */
static uint64_t
hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 1099511628211ULL;
	return h;
}

static void idset_add(IdSet *set, const char *id);

static void
idset_grow(IdSet *set)
{
	IdSet bigger = {0};
	size_t i;

	bigger.size = set->size ? set->size * 2 : 1024;
	bigger.slots = calloc(bigger.size, sizeof(char *));
	if (bigger.slots == NULL)
		abort();
	for (i = 0; i < set->size; i++)
		if (set->slots[i])
		{
			size_t j = hash_str(set->slots[i]) & (bigger.size - 1);

			while (bigger.slots[j])
				j = (j + 1) & (bigger.size - 1);
			bigger.slots[j] = set->slots[i];
			bigger.used++;
		}
	free(set->slots);
	*set = bigger;
}

/* Add id (copied) unless present.  Caller holds state_lock. */
static void
idset_add(IdSet *set, const char *id)
{
	size_t j;

	if ((set->used + 1) * 2 > set->size)
		idset_grow(set);
	j = hash_str(id) & (set->size - 1);
	while (set->slots[j])
	{
		if (strcmp(set->slots[j], id) == 0)
			return;
		j = (j + 1) & (set->size - 1);
	}
	set->slots[j] = strdup(id);
	if (set->slots[j] == NULL)
		abort();
	set->used++;
}

/* ---- signatures ---- */
typedef enum
{
	SIG_OK,
	SIG_MISSING,
	SIG_MALFORMED,
	SIG_STALE,
	SIG_MISMATCH
} SigResult;

static const char *const sig_result_names[] = {"ok", "missing", "malformed", "stale", "mismatch"};

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Verify header against the body held in req (which has BODY_HEADROOM bytes
 * free in front of it for the "<t>." prefix, so nothing is copied).
 */
static SigResult
verify_signature(const char *header, Request *req)
{
	unsigned char v1[16][SIGNATURE_SIZE];
	int nv1 = 0;
	long long t = -1;
	const char *p = header;
	char prefix[BODY_HEADROOM];
	int plen;
	unsigned char *signed_data;
	int s, k;

	if (header == NULL || *header == '\0')
		return SIG_MISSING;
	while (*p)
	{
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t) (end - p) : strlen(p);

		while (n > 0 && isspace((unsigned char) *p))
			p++, n--;
		if (n > 2 && p[0] == 't' && p[1] == '=' && t < 0)
		{
			long long v = 0;
			size_t i;

			for (i = 2; i < n && isdigit((unsigned char) p[i]) && v < 1000000000000LL; i++)
				v = v * 10 + (p[i] - '0');
			if (i != n)
				return SIG_MALFORMED;
			t = v;
		}
		else if (n == 3 + 2 * SIGNATURE_SIZE && strncmp(p, "v1=", 3) == 0 && nv1 < 16)
		{
			int i;

			for (i = 0; i < SIGNATURE_SIZE; i++)
			{
				int hi = hexval(p[3 + 2 * i]), lo = hexval(p[4 + 2 * i]);

				if (hi < 0 || lo < 0)
					break;
				v1[nv1][i] = (unsigned char) (hi << 4 | lo);
			}
			if (i == SIGNATURE_SIZE)
				nv1++;
		}
		/* other schemes (v0, ...) and malformed v1 values are ignored */
		if (!end)
			break;
		p = end + 1;
	}
	if (t < 0 || nv1 == 0)
		return SIG_MALFORMED;
	if (llabs((long long) time(NULL) - t) > opt.tolerance)
		return SIG_STALE;

	plen = snprintf(prefix, sizeof(prefix), "%lld.", t);
	signed_data = (unsigned char *) req->buf + BODY_HEADROOM - plen;
	memcpy(signed_data, prefix, (size_t) plen);
	for (s = 0; s < opt.nsecrets; s++)
	{
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int maclen = 0;

		if (HMAC(EVP_sha256(), opt.secrets[s], (int) opt.secret_len[s], signed_data,
				 req->len + (size_t) plen, mac, &maclen) == NULL ||
			maclen != SIGNATURE_SIZE)
			continue;
		for (k = 0; k < nv1; k++)
			if (CRYPTO_memcmp(mac, v1[k], SIGNATURE_SIZE) == 0)
				return SIG_OK;
	}
	return SIG_MISMATCH;
}

/* ---- responses ---- */
static enum MHD_Result
respond(struct MHD_Connection *conn, int status, const char *body, int retry_after)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(strlen(body), (void *) body, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", "application/json");
	if (retry_after >= 0)
	{
		char ra[24];

		snprintf(ra, sizeof(ra), "%d", retry_after);
		MHD_add_response_header(resp, "Retry-After", ra);
	}
	ret = MHD_queue_response(conn, (unsigned int) status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void
stats_json(Buf *b)
{
	int i;
	bool first = true;

	pthread_mutex_lock(&state_lock);
	buf_printf(b,
			   "{\"requests\":%ld,\"ok\":%ld,\"verified\":%ld,\"bad_signature\":%ld,"
			   "\"distinct_event_ids\":%zu,\"distinct_acked\":%zu,\"hung\":%ld,"
			   "\"in_progress\":%ld,\"max_concurrent\":%ld,\"down\":%s,\"rules\":%d,\"status\":{",
			   stats.requests, stats.ok, stats.verified, stats.bad_signature,
			   all_ids.used, acked_ids.used, stats.hung, stats.in_progress,
			   stats.max_concurrent, down ? "true" : "false", nrules);
	for (i = 100; i < 600; i++)
		if (stats.by_status[i])
		{
			buf_printf(b, "%s\"%d\":%ld", first ? "" : ",", i, stats.by_status[i]);
			first = false;
		}
	buf_addstr(b, "}}");
	pthread_mutex_unlock(&state_lock);
}

static bool
parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end != '\0' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* POST|GET /_control?...: change the behaviour; see the file header. */
static enum MHD_Result
handle_control(struct MHD_Connection *conn)
{
	const char *q_reset = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "reset");
	const char *q_down = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "down");
	const char *q_status = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "status");
	const char *q_hang = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hang_ms");
	const char *q_count = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "count");
	const char *q_ra = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "retry_after");
	Rule rule = {.status = 0, .hang_ms = 0, .retry_after = -1, .count = 1};
	long status = 0, retry_after = -1;
	Buf b = {0};
	enum MHD_Result ret;

	if (q_status && !parse_long(q_status, 100, 599, &status))
		return respond(conn, 400, "{\"error\":\"status must be 100..599\"}", -1);
	if (q_hang && !parse_long(q_hang, 0, 3600000, &rule.hang_ms))
		return respond(conn, 400, "{\"error\":\"hang_ms must be 0..3600000\"}", -1);
	if (q_count && (!parse_long(q_count, -1, LONG_MAX, &rule.count) || rule.count == 0))
		return respond(conn, 400, "{\"error\":\"count must be -1 (until reset) or positive\"}", -1);
	if (q_ra && !parse_long(q_ra, 0, 86400, &retry_after))
		return respond(conn, 400, "{\"error\":\"retry_after must be 0..86400\"}", -1);
	if (q_down && strcmp(q_down, "0") != 0 && strcmp(q_down, "1") != 0)
		return respond(conn, 400, "{\"error\":\"down must be 0 or 1\"}", -1);
	rule.status = (int) status;
	rule.retry_after = (int) retry_after;

	pthread_mutex_lock(&state_lock);
	stats.controls++;
	if (q_reset && strcmp(q_reset, "1") == 0)
	{
		nrules = 0;
		down = false;
		generation++;
		pthread_cond_broadcast(&state_cond);
	}
	if (q_down)
		down = strcmp(q_down, "1") == 0;
	if ((q_status || q_hang) && nrules < MAX_RULES)
		rules[nrules++] = rule;
	pthread_mutex_unlock(&state_lock);

	stats_json(&b);
	ret = respond(conn, 200, b.data, -1);
	free(b.data);
	return ret;
}

/* Take the behaviour for one verified event.  Caller holds state_lock. */
static Rule
next_rule(void)
{
	Rule r = {.status = 200, .hang_ms = 0, .retry_after = -1, .count = 0};

	if (down)
	{
		r.status = 503;
		return r;
	}
	if (nrules > 0)
	{
		r = rules[0];
		if (r.status == 0)
			r.status = 200;
		if (rules[0].count > 0 && --rules[0].count == 0)
		{
			memmove(rules, rules + 1, (size_t) (nrules - 1) * sizeof(Rule));
			nrules--;
		}
	}
	return r;
}

/* Wait up to ms milliseconds, or until reset or shutdown. */
static void
hang(long ms)
{
	struct timespec until;
	long gen;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L)
		until.tv_sec++, until.tv_nsec -= 1000000000L;
	pthread_mutex_lock(&state_lock);
	gen = generation;
	while (gen == generation && !stopping)
		if (pthread_cond_timedwait(&state_cond, &state_lock, &until) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&state_lock);
}

/* Commit-to-receipt latency of a 2xx event, from the envelope's ts_us. */
static void
record_latency(const Request *req, double received_ms)
{
	const char *body = req->buf + BODY_HEADROOM;
	const char *p = memmem(body, req->len, "\"ts_us\":", 8);
	long long ts = 0;
	char line[48];
	int n;

	if (p == NULL)
		return;
	p += 8;
	while (p < body + req->len && isdigit((unsigned char) *p) && ts < 100000000000000000LL)
		ts = ts * 10 + (*p++ - '0');
	if (ts == 0)
		return;
	n = snprintf(line, sizeof(line), "%.3f\n", received_ms - ts / 1000.0);
	write_line(opt.latency_fd, line, (size_t) n);
}

static const char *
header(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* A POST of one event: verify, apply the rules, answer, record. */
static enum MHD_Result
handle_event(struct MHD_Connection *conn, const char *url, Request *req)
{
	double received = now_ms();
	const char *sig = header(conn, "BV-Signature");
	const char *event_id = header(conn, "BV-Event-Id");
	const char *op = header(conn, "BV-Op");
	const char *table = header(conn, "BV-Table");
	SigResult vr = verify_signature(sig, req);
	Rule r = {.status = 401, .hang_ms = 0, .retry_after = -1};
	enum MHD_Result ret;
	char answer[96];

	pthread_mutex_lock(&state_lock);
	stats.requests++;
	if (++stats.in_progress > stats.max_concurrent)
		stats.max_concurrent = stats.in_progress;
	if (event_id)
		idset_add(&all_ids, event_id);
	if (vr == SIG_OK)
	{
		stats.verified++;
		r = next_rule();
		if (r.hang_ms > 0)
			stats.hung++;
	}
	else
		stats.bad_signature++;
	pthread_mutex_unlock(&state_lock);

	if (r.hang_ms > 0)
		hang(r.hang_ms);

	if (r.status == 401)
		snprintf(answer, sizeof(answer), "{\"error\":\"signature %s\"}", sig_result_names[vr]);
	else
		snprintf(answer, sizeof(answer), "{\"status\":%d}", r.status);
	ret = respond(conn, r.status, answer, r.retry_after);

	pthread_mutex_lock(&state_lock);
	stats.in_progress--;
	stats.by_status[r.status]++;
	if (r.status >= 200 && r.status < 300)
	{
		stats.ok++;
		if (event_id)
			idset_add(&acked_ids, event_id);
	}
	pthread_mutex_unlock(&state_lock);

	if (opt.log_fd >= 0)
	{
		Buf b = {0};

		buf_printf(&b, "{\"received_ms\":%.3f,\"method\":\"POST\",\"path\":", received);
		buf_json_or_null(&b, url);
		buf_addstr(&b, ",\"event_id\":");
		buf_json_or_null(&b, event_id);
		buf_printf(&b, ",\"status\":%d,\"verified\":%s,\"verify\":\"%s\",\"hang_ms\":%ld,\"signature\":",
				   r.status, vr == SIG_OK ? "true" : "false", sig_result_names[vr], r.hang_ms);
		buf_json_or_null(&b, sig);
		buf_addstr(&b, ",\"topic\":");
		buf_json_or_null(&b, header(conn, "BV-Topic"));
		buf_addstr(&b, ",\"op\":");
		buf_json_or_null(&b, op);
		buf_addstr(&b, ",\"table\":");
		buf_json_or_null(&b, table);
		buf_addstr(&b, ",\"lsn\":");
		buf_json_or_null(&b, header(conn, "BV-LSN"));
		buf_addstr(&b, ",\"traceparent\":");
		buf_json_or_null(&b, header(conn, "traceparent"));
		buf_addstr(&b, ",\"user_agent\":");
		buf_json_or_null(&b, header(conn, "User-Agent"));
		buf_addstr(&b, ",\"content_type\":");
		buf_json_or_null(&b, header(conn, "Content-Type"));
		buf_addstr(&b, ",\"body\":");
		buf_json_string(&b, req->buf + BODY_HEADROOM, req->len);
		buf_add(&b, "}\n", 2);
		write_line(opt.log_fd, b.data, b.len);
		free(b.data);
	}
	if (opt.latency_fd >= 0 && r.status >= 200 && r.status < 300)
		record_latency(req, received);
	if (!opt.quiet)
		printf("event %s  op=%s table=%s verified=%s -> %d\n", event_id ? event_id : "(no id)",
			   op ? op : "?", table ? table : "?", vr == SIG_OK ? "yes" : sig_result_names[vr], r.status);
	return ret;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
	   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	Request *req = *con_cls;

	(void) cls;
	(void) version;
	if (req == NULL)
	{
		req = calloc(1, sizeof(Request));
		if (req == NULL)
			return MHD_NO;
		req->cap = BODY_HEADROOM + 4096;
		req->buf = malloc(req->cap);
		if (req->buf == NULL)
		{
			free(req);
			return MHD_NO;
		}
		*con_cls = req;
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		size_t n = *upload_data_size;

		if (!req->too_big && req->len + n > MAX_BODY)
			req->too_big = true;
		if (!req->too_big)
		{
			if (BODY_HEADROOM + req->len + n > req->cap)
			{
				size_t cap = req->cap;
				char *nb;

				while (BODY_HEADROOM + req->len + n > cap)
					cap *= 2;
				nb = realloc(req->buf, cap);
				if (nb == NULL)
					return MHD_NO;
				req->buf = nb;
				req->cap = cap;
			}
			memcpy(req->buf + BODY_HEADROOM + req->len, upload_data, n);
			req->len += n;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	req->buf[BODY_HEADROOM + req->len] = '\0';

	if (strcmp(url, "/_control") == 0)
		return handle_control(conn);
	if (strcmp(url, "/_stats") == 0)
	{
		Buf b = {0};
		enum MHD_Result ret;

		stats_json(&b);
		ret = respond(conn, 200, b.data, -1);
		free(b.data);
		return ret;
	}
	if (strcmp(url, "/_health") == 0)
		return respond(conn, 200, "{\"ok\":true}", -1);
	if (strncmp(url, "/_", 2) == 0)
		return respond(conn, 404, "{\"error\":\"no such control endpoint\"}", -1);
	if (strcmp(method, "POST") != 0)
		return respond(conn, 405, "{\"error\":\"events are POSTed\"}", -1);
	if (req->too_big)
		return respond(conn, 413, "{\"error\":\"body too large\"}", -1);
	return handle_event(conn, url, req);
}

static void
completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	Request *req = *con_cls;

	(void) cls;
	(void) conn;
	(void) toe;
	if (req)
	{
		free(req->buf);
		free(req);
		*con_cls = NULL;
	}
}

/* A secret: the file's content without its trailing newline. */
static void
read_secret(const char *path)
{
	FILE *f;
	char *data = NULL;
	size_t len = 0, cap = 0;
	char chunk[4096];
	size_t n;

	if (opt.nsecrets >= MAX_SECRETS)
	{
		fprintf(stderr, "bv_webhook_receiver: at most %d secrets\n", MAX_SECRETS);
		exit(2);
	}
	f = fopen(path, "rb");
	if (f == NULL)
	{
		fprintf(stderr, "bv_webhook_receiver: cannot read %s: %s\n", path, strerror(errno));
		exit(2);
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
	{
		if (len + n + 1 > cap)
		{
			cap = (len + n + 1) * 2;
			data = realloc(data, cap);
			if (data == NULL)
				abort();
		}
		memcpy(data + len, chunk, n);
		len += n;
	}
	fclose(f);
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	if (len == 0)
	{
		fprintf(stderr, "bv_webhook_receiver: %s is empty\n", path);
		exit(2);
	}
	data[len] = '\0';
	opt.secrets[opt.nsecrets] = data;
	opt.secret_len[opt.nsecrets] = len;
	opt.nsecrets++;
}

static int
open_output(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

	if (fd < 0)
	{
		fprintf(stderr, "bv_webhook_receiver: cannot open %s: %s\n", path, strerror(errno));
		exit(2);
	}
	return fd;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: bv_webhook_receiver --secret-file F [--secret-file F2 ...] [--port N]\n"
			"                           [--tolerance SECONDS] [--log FILE] [--latency FILE] [--quiet]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct MHD_Daemon *daemon;
	struct sockaddr_in addr;
	const union MHD_DaemonInfo *info;
	sigset_t sigs;
	int sig, i;
	long v;

	for (i = 1; i < argc; i++)
	{
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--quiet") == 0)
		{
			opt.quiet = true;
			continue;
		}
		if (val == NULL)
			usage();
		if (strcmp(a, "--port") == 0 && parse_long(val, 0, 65535, &v))
			opt.port = (int) v;
		else if (strcmp(a, "--tolerance") == 0 && parse_long(val, 0, 86400 * 365, &v))
			opt.tolerance = v;
		else if (strcmp(a, "--secret-file") == 0)
			read_secret(val);
		else if (strcmp(a, "--log") == 0)
			opt.log_fd = open_output(val);
		else if (strcmp(a, "--latency") == 0)
			opt.latency_fd = open_output(val);
		else
			usage();
		i++;
	}
	if (opt.nsecrets == 0)
		usage();

	/* Signals go to the main thread only (sigwait below). */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t) opt.port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	daemon = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
								  MHD_USE_POLL | MHD_USE_ERROR_LOG,
							  0, NULL, NULL, handle, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
							  MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 300,
							  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 1000,
							  MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int) 512,
							  MHD_OPTION_END);
	if (daemon == NULL)
	{
		fprintf(stderr, "bv_webhook_receiver: cannot listen on 127.0.0.1:%d\n", opt.port);
		return 1;
	}
	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	printf("127.0.0.1:%u\n", info ? (unsigned int) info->port : (unsigned int) opt.port);

	do
	{
		if (sigwait(&sigs, &sig) != 0)
			sig = SIGTERM;
	} while (sig == SIGHUP);

	pthread_mutex_lock(&state_lock);
	stopping = true;
	pthread_cond_broadcast(&state_cond);
	pthread_mutex_unlock(&state_lock);
	MHD_stop_daemon(daemon);
	return 0;
}
