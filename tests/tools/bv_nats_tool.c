/*
 * bv_nats_tool: the NATS side of bv_cdc's tests and benchmarks (libnats).
 *
 *   bv_nats_tool stream  HOST PORT NAME SUBJECT [MAX_MSGS]  a file-stored
 *        JetStream stream taking SUBJECT (e.g. "bv.>"), de-duplication
 *        window 2 min; with MAX_MSGS, at most that many messages and
 *        publishes refused when full (discard new)
 *   bv_nats_tool stream-limit HOST PORT NAME SUBJECT MAX_MSGS  change it
 *   bv_nats_tool dump    HOST PORT NAME             every message of the
 *        stream, one JSON line each, in stream order:
 *        {"seq":1,"subject":"...","headers":{"Nats-Msg-Id":"...",...},"body":<raw>}
 *   bv_nats_tool count   HOST PORT NAME             the number of messages
 *   bv_nats_tool publish HOST PORT SUBJECT FILE WINDOW
 *        the benchmark's ceiling: each line of FILE published to JetStream
 *        with a reply inbox and the headers bv_cdc sets, at most WINDOW
 *        unacknowledged (as bv_cdc does); prints
 *        {"messages":N,"seconds":S,"per_s":R,"errors":E}
 */
#include <nats/nats.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void
check(natsStatus s, const char *what)
{
	if (s == NATS_OK)
		return;
	fprintf(stderr, "bv_nats_tool: %s: %s\n", what, natsStatus_GetText(s));
	exit(1);
}

/* TLS when BV_NATS_CA is set (client certificate: BV_NATS_CERT, BV_NATS_KEY). */
static natsConnection *
connect_to(const char *host, const char *port)
{
	natsConnection *nc = NULL;
	natsOptions *o = NULL;
	const char *ca = getenv("BV_NATS_CA");
	char url[256];

	snprintf(url, sizeof(url), "%s://%s:%s", ca ? "tls" : "nats", host, port);
	check(natsOptions_Create(&o), "options");
	check(natsOptions_SetURL(o, url), "url");
	if (ca != NULL)
	{
		check(natsOptions_SetSecure(o, true), "tls");
		check(natsOptions_LoadCATrustedCertificates(o, ca), "ca");
		if (getenv("BV_NATS_CERT"))
			check(natsOptions_LoadCertificatesChain(o, getenv("BV_NATS_CERT"), getenv("BV_NATS_KEY")),
				  "client certificate");
	}
	check(natsConnection_Connect(&nc, o), "connect");
	natsOptions_Destroy(o);
	return nc;
}

static void
json_str(const char *s, int len)
{
	int i;

	putchar('"');
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/*
 * Create stream NAME on SUBJECT (file storage, 2-minute de-duplication
 * window).  max_msgs > 0: at most that many messages, new ones refused
 * when full (discard new), as a full stream refuses a publish; update: change
 * an existing stream's limit.
 */
static int
stream(natsConnection *nc, const char *name, const char *subject, int64_t max_msgs, int update)
{
	jsCtx *js = NULL;
	jsStreamConfig cfg;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	const char *subjects[1] = {subject};

	check(natsConnection_JetStream(&js, nc, NULL), "jetstream");
	jsStreamConfig_Init(&cfg);
	cfg.Name = name;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	cfg.Duplicates = (int64_t) 120 * 1000 * 1000 * 1000;
	if (max_msgs > 0)
	{
		cfg.MaxMsgs = max_msgs;
		cfg.Discard = js_DiscardNew;
	}
	if ((update ? js_UpdateStream(&si, js, &cfg, NULL, &jerr)
				: js_AddStream(&si, js, &cfg, NULL, &jerr)) != NATS_OK)
	{
		fprintf(stderr, "bv_nats_tool: %s stream: %s (%d)\n", update ? "update" : "add",
				nats_GetLastError(NULL), jerr);
		return 1;
	}
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	return 0;
}

static uint64_t
last_seq(jsCtx *js, const char *name, uint64_t *msgs)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	uint64_t last;

	check(js_GetStreamInfo(&si, js, name, NULL, &jerr), "stream info");
	last = si->State.LastSeq;
	if (msgs)
		*msgs = si->State.Msgs;
	jsStreamInfo_Destroy(si);
	return last;
}

static int
dump(natsConnection *nc, const char *name, int count_only)
{
	jsCtx *js = NULL;
	uint64_t seq, last, msgs;

	check(natsConnection_JetStream(&js, nc, NULL), "jetstream");
	last = last_seq(js, name, &msgs);
	if (count_only)
	{
		printf("%llu\n", (unsigned long long) msgs);
		return 0;
	}
	for (seq = 1; seq <= last; seq++)
	{
		natsMsg *m = NULL;
		jsErrCode jerr = 0;
		const char **keys = NULL;
		int nkeys = 0, i;

		if (js_GetMsg(&m, js, name, seq, NULL, &jerr) != NATS_OK)
			continue;
		printf("{\"seq\":%llu,\"subject\":", (unsigned long long) seq);
		json_str(natsMsg_GetSubject(m), (int) strlen(natsMsg_GetSubject(m)));
		printf(",\"headers\":{");
		if (natsMsgHeader_Keys(m, &keys, &nkeys) == NATS_OK)
		{
			for (i = 0; i < nkeys; i++)
			{
				const char *v = NULL;

				natsMsgHeader_Get(m, keys[i], &v);
				if (i > 0)
					putchar(',');
				json_str(keys[i], (int) strlen(keys[i]));
				putchar(':');
				json_str(v ? v : "", v ? (int) strlen(v) : 0);
			}
			free((void *) keys);
		}
		printf("},\"body\":");
		fwrite(natsMsg_GetData(m), 1, natsMsg_GetDataLength(m), stdout);
		printf("}\n");
		natsMsg_Destroy(m);
	}
	jsCtx_Destroy(js);
	return 0;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long errors = 0;

static long
drain(natsSubscription *sub, int64_t timeout)
{
	long n = 0;

	for (;;)
	{
		natsMsg *m = NULL;
		natsStatus s = natsSubscription_NextMsg(&m, sub, timeout);

		if (s == NATS_TIMEOUT)
			return n;
		check(s, "ack");
		timeout = 0;
		if (natsMsg_GetDataLength(m) == 0 || strstr(natsMsg_GetData(m), "\"error\""))
			errors++;
		natsMsg_Destroy(m);
		n++;
	}
}

static int
publish(natsConnection *nc, const char *subject, const char *file, int window)
{
	natsInbox *inbox = NULL;
	natsSubscription *sub = NULL;
	FILE *f = fopen(file, "r");
	char *line = NULL, reply[128], mid[32], prefix[96];
	size_t cap = 0;
	ssize_t len;
	long sent = 0, inflight = 0;
	double t0;

	if (f == NULL)
	{
		perror(file);
		return 1;
	}
	check(natsInbox_Create(&inbox), "inbox");
	snprintf(prefix, sizeof(prefix), "%s", (const char *) inbox);
	snprintf(reply, sizeof(reply), "%s.*", prefix);
	check(natsConnection_SubscribeSync(&sub, nc, reply), "subscribe");
	check(natsSubscription_SetPendingLimits(sub, 4 * window + 1024, -1), "limits");
	t0 = now_s();
	while ((len = getline(&line, &cap, f)) > 0)
	{
		natsMsg *m = NULL;

		if (line[len - 1] == '\n')
			line[--len] = '\0';
		while (inflight >= window)
			inflight -= drain(sub, 5000);
		snprintf(reply, sizeof(reply), "%s.%ld", prefix, sent);
		snprintf(mid, sizeof(mid), "ceiling-%ld-%ld", (long) time(NULL), sent);
		check(natsMsg_Create(&m, subject, reply, line, (int) len), "msg");
		natsMsgHeader_Set(m, "Nats-Msg-Id", mid);
		natsMsgHeader_Set(m, "Content-Type", "application/json");
		natsMsgHeader_Set(m, "op", "u");
		natsMsgHeader_Set(m, "table", "public.bench");
		natsMsgHeader_Set(m, "lsn", "0/16B3748");
		natsMsgHeader_Set(m, "xid", "1000");
		natsMsgHeader_Set(m, "key", "{\"id\":1}");
		check(natsConnection_PublishMsg(nc, m), "publish");
		natsMsg_Destroy(m);
		sent++;
		inflight++;
		if ((sent & 63) == 0)
			inflight -= drain(sub, 0);
	}
	while (inflight > 0)
		inflight -= drain(sub, 5000);
	printf("{\"messages\":%ld,\"seconds\":%.3f,\"per_s\":%.0f,\"errors\":%ld}\n", sent,
		   now_s() - t0, sent / (now_s() - t0), errors);
	return errors > 0;
}

int
main(int argc, char **argv)
{
	int rc = 2;

	if ((argc == 6 || argc == 7) && strcmp(argv[1], "stream") == 0)
		rc = stream(connect_to(argv[2], argv[3]), argv[4], argv[5],
					argc == 7 ? strtoll(argv[6], NULL, 10) : 0, 0);
	else if (argc == 7 && strcmp(argv[1], "stream-limit") == 0)
		rc = stream(connect_to(argv[2], argv[3]), argv[4], argv[5], strtoll(argv[6], NULL, 10), 1);
	else if (argc == 5 && strcmp(argv[1], "dump") == 0)
		rc = dump(connect_to(argv[2], argv[3]), argv[4], 0);
	else if (argc == 5 && strcmp(argv[1], "count") == 0)
		rc = dump(connect_to(argv[2], argv[3]), argv[4], 1);
	else if (argc == 7 && strcmp(argv[1], "publish") == 0)
		rc = publish(connect_to(argv[2], argv[3]), argv[4], argv[5], atoi(argv[6]));
	else
		fprintf(stderr, "usage: bv_nats_tool stream|dump|count|publish ...\n");
	fflush(stdout);
	_exit(rc);
}
