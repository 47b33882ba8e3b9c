/*
 * bv_kafka_latency: end-to-end latency of bv_cdc, from commit to receipt.
 *
 * Consumes TOPIC from its end (messages produced after start-up) and, for
 * each bv_cdc envelope, prints one line: milliseconds between the change's
 * commit ("ts_us" in the envelope's source, the commit timestamp in
 * microseconds since the Unix epoch) and the moment this consumer received
 * it.  Stops after COUNT messages or SECONDS without a message.
 *
 * Usage: bv_kafka_latency BOOTSTRAP TOPIC COUNT [SECONDS]
 *
 * Both clocks are the same machine's, so no clock skew is involved.  The
 * consumer uses a random group id and reads every partition.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

static long long
now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (long long) tv.tv_sec * 1000000 + tv.tv_usec;
}

static int
set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
	char errstr[512];

	if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "bv_kafka_latency: %s: %s\n", k, errstr);
		return 1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_topic_partition_list_t *topics;
	char errstr[512], group[64];
	long count, seen = 0;
	int idle_limit;
	long long last = now_us();

	if (argc < 4)
	{
		fprintf(stderr, "usage: bv_kafka_latency BOOTSTRAP TOPIC COUNT [SECONDS]\n");
		return 2;
	}
	count = atol(argv[3]);
	idle_limit = argc > 4 ? atoi(argv[4]) : 30;
	snprintf(group, sizeof(group), "bv-latency-%ld", (long) now_us());

	conf = rd_kafka_conf_new();
	if (set(conf, "bootstrap.servers", argv[1]) || set(conf, "group.id", group) ||
		set(conf, "auto.offset.reset", "latest") || set(conf, "fetch.wait.max.ms", "5") ||
		set(conf, "fetch.error.backoff.ms", "5"))
		return 1;
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "bv_kafka_latency: %s\n", errstr);
		return 1;
	}
	rd_kafka_poll_set_consumer(rk);
	topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, argv[2], RD_KAFKA_PARTITION_UA);
	if (rd_kafka_subscribe(rk, topics))
	{
		fprintf(stderr, "bv_kafka_latency: subscribe failed\n");
		return 1;
	}
	rd_kafka_topic_partition_list_destroy(topics);
	fprintf(stderr, "bv_kafka_latency: consuming %s\n", argv[2]);

	while (seen < count && now_us() - last < (long long) idle_limit * 1000000)
	{
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		long long recv, commit_us;
		const char *p;

		if (m == NULL)
			continue;
		recv = now_us();
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF || m->err)
		{
			if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				fprintf(stderr, "bv_kafka_latency: %s\n", rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		last = recv;
		p = m->payload ? strstr((const char *) m->payload, "\"ts_us\":") : NULL;
		if (p != NULL && (commit_us = atoll(p + 8)) > 0)
		{
			printf("%.3f\n", (recv - commit_us) / 1000.0);
			seen++;
		}
		rd_kafka_message_destroy(m);
	}
	fflush(stdout);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return seen < count ? 1 : 0;
}
