/*
 * bv_kafka_mock: host librdkafka's mock Kafka cluster for tests and `make run`.
 *
 * librdkafka ships an in-process Kafka cluster (rdkafka_mock.h) that speaks
 * the real wire protocol (Produce, Fetch, Metadata, idempotent producers,
 * consumer groups) on 127.0.0.1 at a random port.  This program keeps one
 * alive, prints its bootstrap address on the first line of stdout, and runs
 * until SIGTERM or SIGINT.  Topics are auto-created with 4 partitions.
 *
 * Fault injection for tests, by signal:
 *   SIGUSR1  every broker goes down (connections closed, new ones refused)
 *   SIGUSR2  every broker comes back up
 *
 * Usage: bv_kafka_mock [BROKERS]      (default 1 broker)
 *
 * Single-threaded apart from librdkafka's own threads; the signal handlers
 * only set flags that the main loop acts on.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t want_down = 0;
static volatile sig_atomic_t want_up = 0;

static void
on_stop(int sig)
{
	(void) sig;
	stop_requested = 1;
}

static void
on_down(int sig)
{
	(void) sig;
	want_down = 1;
}

static void
on_up(int sig)
{
	(void) sig;
	want_up = 1;
}

static void
set_all_brokers(rd_kafka_mock_cluster_t *mc, int brokers, int up)
{
	for (int id = 1; id <= brokers; id++)
	{
		rd_kafka_resp_err_t err = up ? rd_kafka_mock_broker_set_up(mc, id)
									 : rd_kafka_mock_broker_set_down(mc, id);

		if (err)
			fprintf(stderr, "bv_kafka_mock: broker %d: %s\n", id, rd_kafka_err2str(err));
	}
	fprintf(stderr, "bv_kafka_mock: brokers %s\n", up ? "up" : "down");
}

int
main(int argc, char **argv)
{
	int brokers = argc > 1 ? atoi(argv[1]) : 1;
	char errstr[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
	struct sigaction sa;

	if (brokers < 1 || brokers > 9)
	{
		fprintf(stderr, "usage: bv_kafka_mock [BROKERS 1-9]\n");
		return 2;
	}
	/* The mock cluster needs a client instance to live in. */
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "bv_kafka_mock: %s\n", errstr);
		return 1;
	}
	mc = rd_kafka_mock_cluster_new(rk, brokers);
	if (mc == NULL)
	{
		fprintf(stderr, "bv_kafka_mock: could not create the mock cluster\n");
		return 1;
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_down;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_up;
	sigaction(SIGUSR2, &sa, NULL);

	printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
	fflush(stdout);

	while (!stop_requested)
	{
		struct timespec ts = {0, 50 * 1000 * 1000};

		if (want_down)
		{
			want_down = 0;
			set_all_brokers(mc, brokers, 0);
		}
		if (want_up)
		{
			want_up = 0;
			set_all_brokers(mc, brokers, 1);
		}
		nanosleep(&ts, NULL);
	}

	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	return 0;
}
