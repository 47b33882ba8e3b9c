/*
 * bv_amqp_tool: the AMQP side of bv_cdc's tests and benchmarks (librabbitmq).
 *
 *   bv_amqp_tool bind    HOST PORT QUEUE EXCHANGE KEY   durable queue, bound
 *   bv_amqp_tool consume HOST PORT QUEUE                 one JSON line per
 *        message, acknowledged after it is printed (and flushed):
 *        {"rk":"...","exchange":"...","message_id":"...","delivery_mode":2,
 *         "content_type":"...","headers":{"op":"c",...,"xid":123},
 *         "redelivered":false,"body":<the body, raw>}
 *   bv_amqp_tool publish HOST PORT EXCHANGE KEY FILE WINDOW
 *        the benchmark's ceiling: publishes each line of FILE (persistent,
 *        mandatory, confirms, at most WINDOW unconfirmed, the same headers
 *        bv_cdc sets) and prints {"messages":N,"seconds":S,"per_s":R}.
 *
 * Credentials: guest/guest (the tests' brokers allow it from 127.0.0.1).
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static void
die(const char *what, amqp_rpc_reply_t r)
{
	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return;
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
		fprintf(stderr, "bv_amqp_tool: %s: %s\n", what, amqp_error_string2(r.library_error));
	else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
			 (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD || r.reply.id == AMQP_CONNECTION_CLOSE_METHOD))
	{
		amqp_channel_close_t *c = r.reply.decoded;

		fprintf(stderr, "bv_amqp_tool: %s: %u %.*s\n", what, c->reply_code, (int) c->reply_text.len,
				(char *) c->reply_text.bytes);
	}
	else
		fprintf(stderr, "bv_amqp_tool: %s failed\n", what);
	exit(1);
}

static amqp_connection_state_t
connect_to(const char *host, int port)
{
	amqp_connection_state_t c = amqp_new_connection();
	amqp_socket_t *s = amqp_tcp_socket_new(c);

	if (s == NULL || amqp_socket_open(s, host, port) != AMQP_STATUS_OK)
	{
		fprintf(stderr, "bv_amqp_tool: could not connect to %s:%d\n", host, port);
		exit(1);
	}
	die("login", amqp_login(c, "/", 0, 131072, 30, AMQP_SASL_METHOD_PLAIN, "guest", "guest"));
	amqp_channel_open(c, 1);
	die("channel.open", amqp_get_rpc_reply(c));
	return c;
}

static void
json_str(FILE *f, const void *p, size_t len)
{
	const unsigned char *s = p;
	size_t i;

	fputc('"', f);
	for (i = 0; i < len; i++)
	{
		if (s[i] == '"' || s[i] == '\\')
			fprintf(f, "\\%c", s[i]);
		else if (s[i] < 0x20)
			fprintf(f, "\\u%04x", s[i]);
		else
			fputc(s[i], f);
	}
	fputc('"', f);
}

static void
print_value(const amqp_field_value_t *v)
{
	switch (v->kind)
	{
		case AMQP_FIELD_KIND_UTF8:
		case AMQP_FIELD_KIND_BYTES:
			json_str(stdout, v->value.bytes.bytes, v->value.bytes.len);
			break;
		case AMQP_FIELD_KIND_I64:
			printf("%lld", (long long) v->value.i64);
			break;
		case AMQP_FIELD_KIND_I32:
			printf("%d", v->value.i32);
			break;
		case AMQP_FIELD_KIND_BOOLEAN:
			printf("%s", v->value.boolean ? "true" : "false");
			break;
		default:
			printf("null");
	}
}

static int
consume(const char *host, int port, const char *queue)
{
	amqp_connection_state_t c = connect_to(host, port);

	amqp_basic_qos(c, 1, 0, 500, 0);
	die("basic.qos", amqp_get_rpc_reply(c));
	amqp_basic_consume(c, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
					   amqp_empty_table);
	die("basic.consume", amqp_get_rpc_reply(c));
	fprintf(stderr, "bv_amqp_tool: consuming\n");
	for (;;)
	{
		amqp_envelope_t e;
		amqp_rpc_reply_t r;
		amqp_basic_properties_t *p;
		int i;

		amqp_maybe_release_buffers(c);
		r = amqp_consume_message(c, &e, NULL, 0);
		if (r.reply_type != AMQP_RESPONSE_NORMAL)
			die("consume", r);
		p = &e.message.properties;
		printf("{\"rk\":");
		json_str(stdout, e.routing_key.bytes, e.routing_key.len);
		printf(",\"exchange\":");
		json_str(stdout, e.exchange.bytes, e.exchange.len);
		printf(",\"message_id\":");
		if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
			json_str(stdout, p->message_id.bytes, p->message_id.len);
		else
			printf("null");
		printf(",\"content_type\":");
		if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
			json_str(stdout, p->content_type.bytes, p->content_type.len);
		else
			printf("null");
		printf(",\"delivery_mode\":%d",
			   (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) ? p->delivery_mode : 0);
		printf(",\"redelivered\":%s,\"headers\":{", e.redelivered ? "true" : "false");
		if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
			for (i = 0; i < p->headers.num_entries; i++)
			{
				if (i > 0)
					putchar(',');
				json_str(stdout, p->headers.entries[i].key.bytes, p->headers.entries[i].key.len);
				putchar(':');
				print_value(&p->headers.entries[i].value);
			}
		printf("},\"body\":");
		fwrite(e.message.body.bytes, 1, e.message.body.len, stdout);
		printf("}\n");
		fflush(stdout);
		amqp_basic_ack(c, 1, e.delivery_tag, 0);
		amqp_destroy_envelope(&e);
	}
	return 0;
}

static int
bind_queue(const char *host, int port, const char *queue, const char *exchange, const char *key)
{
	amqp_connection_state_t c = connect_to(host, port);

	amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
	die("queue.declare", amqp_get_rpc_reply(c));
	amqp_queue_bind(c, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
					amqp_cstring_bytes(key), amqp_empty_table);
	die("queue.bind", amqp_get_rpc_reply(c));
	amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(c, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(c);
	return 0;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Serve confirmations: returns how many were confirmed. */
static long
serve(amqp_connection_state_t c, int block)
{
	long n = 0;
	static uint64_t confirmed = 0;

	for (;;)
	{
		amqp_frame_t f;
		struct timeval tv = {block ? 5 : 0, 0};
		int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);

		if (rc == AMQP_STATUS_TIMEOUT)
			return n;
		if (rc != AMQP_STATUS_OK)
		{
			fprintf(stderr, "bv_amqp_tool: %s\n", amqp_error_string2(rc));
			exit(1);
		}
		block = 0;
		if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD)
		{
			amqp_basic_ack_t *a = f.payload.method.decoded;

			if (a->multiple)
			{
				n += (long) (a->delivery_tag - confirmed);
				confirmed = a->delivery_tag;
			}
			else
			{
				n++;
				confirmed = a->delivery_tag; /* in order in practice */
			}
		}
	}
}

static int
publish(const char *host, int port, const char *exchange, const char *key, const char *file,
		int window)
{
	amqp_connection_state_t c = connect_to(host, port);
	FILE *f = fopen(file, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	long sent = 0, inflight = 0;
	double t0;

	if (f == NULL)
	{
		perror(file);
		return 1;
	}
	amqp_confirm_select(c, 1);
	die("confirm.select", amqp_get_rpc_reply(c));
	t0 = now_s();
	while ((len = getline(&line, &cap, f)) > 0)
	{
		amqp_basic_properties_t p;
		amqp_table_entry_t h[6];
		char mid[64];

		if (line[len - 1] == '\n')
			line[--len] = '\0';
		while (inflight >= window)
			inflight -= serve(c, 1);
		snprintf(mid, sizeof(mid), "%ld", sent);
		h[0].key = amqp_cstring_bytes("op");
		h[0].value.kind = AMQP_FIELD_KIND_UTF8;
		h[0].value.value.bytes = amqp_cstring_bytes("u");
		h[1].key = amqp_cstring_bytes("table");
		h[1].value.kind = AMQP_FIELD_KIND_UTF8;
		h[1].value.value.bytes = amqp_cstring_bytes("public.bench");
		h[2].key = amqp_cstring_bytes("lsn");
		h[2].value.kind = AMQP_FIELD_KIND_UTF8;
		h[2].value.value.bytes = amqp_cstring_bytes("0/16B3748");
		h[3].key = amqp_cstring_bytes("xid");
		h[3].value.kind = AMQP_FIELD_KIND_I64;
		h[3].value.value.i64 = 1000 + sent;
		h[4].key = amqp_cstring_bytes("key");
		h[4].value.kind = AMQP_FIELD_KIND_UTF8;
		h[4].value.value.bytes = amqp_cstring_bytes("{\"id\":1}");
		h[5].key = amqp_cstring_bytes("event_id");
		h[5].value.kind = AMQP_FIELD_KIND_UTF8;
		h[5].value.value.bytes = amqp_cstring_bytes(mid);
		memset(&p, 0, sizeof(p));
		p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
				   AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
		p.content_type = amqp_cstring_bytes("application/json");
		p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
		p.message_id = amqp_cstring_bytes(mid);
		p.headers.num_entries = 6;
		p.headers.entries = h;
		if (amqp_basic_publish(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes(key), 1, 0,
							   &p, (amqp_bytes_t){.len = (size_t) len, .bytes = line}) !=
			AMQP_STATUS_OK)
		{
			fprintf(stderr, "bv_amqp_tool: publish failed\n");
			return 1;
		}
		sent++;
		inflight++;
		if ((sent & 63) == 0)
			inflight -= serve(c, 0);
	}
	while (inflight > 0)
		inflight -= serve(c, 1);
	printf("{\"messages\":%ld,\"seconds\":%.3f,\"per_s\":%.0f}\n", sent, now_s() - t0,
		   sent / (now_s() - t0));
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc == 7 && strcmp(argv[1], "bind") == 0)
		return bind_queue(argv[2], atoi(argv[3]), argv[4], argv[5], argv[6]);
	if (argc == 5 && strcmp(argv[1], "consume") == 0)
		return consume(argv[2], atoi(argv[3]), argv[4]);
	if (argc == 8 && strcmp(argv[1], "publish") == 0)
		return publish(argv[2], atoi(argv[3]), argv[4], argv[5], argv[6], atoi(argv[7]));
	fprintf(stderr, "usage: bv_amqp_tool bind|consume|publish ...\n");
	return 2;
}
