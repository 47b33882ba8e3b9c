/*-------------------------------------------------------------------------
 *
 * bridge.c
 *	  The MQTT ingest bridge: a background worker that moves telemetry
 *	  from the broker into iot.telemetry in batches, acknowledging each
 *	  message only after its batch committed, and publishes commands.
 *
 * One static worker per server (registered by bv_iot.c), connected to
 * bv_iot.database.  It follows worker_spi: SIGHUP reloads settings, SIGTERM
 * is die(); waits are WaitLatchOrSocket with WL_EXIT_ON_PM_DEATH, then
 * CHECK_FOR_INTERRUPTS.  bridge_main owns the loop and calls step
 * functions; nothing below calls back up into it.
 *
 * Life cycle:
 *   1. While bv_iot is not installed, or iot.bridge_config.enabled is off,
 *      wait (bv_iot.naptime, or a second when only disabled).
 *   2. Connect with the persistent session (mqtt.c), wait for CONNACK,
 *      subscribe to the telemetry filters and devices/+/ack,
 *      devices/+/result, devices/+/status; after (re)start, publish again the commands left
 *      "sent" (state survives restarts; devices deduplicate by id).
 *   3. Loop: read messages into the inbox; when batch_size messages are in
 *      or batch_ms passed since the first, write the batch in one
 *      transaction (validate.c, batch.c, command reports, counters),
 *      commit, then flush the PUBACKs (mqtt.c).  Idle for a second: read
 *      the configuration again and publish due commands.
 *   4. Connection lost: drop the uncommitted inbox (the broker redelivers
 *      it), back off with jitter, reconnect.
 *
 * Bad input never stops ingestion: validation quarantines instead of
 * throwing, and if a batch's transaction still fails (say, a reading for a
 * day whose partition was dropped meanwhile) the batch is written again a
 * message at a time, each in its own transaction; a message that fails
 * alone is quarantined as write_failed with the error's message.
 *
 * Memory: "bv_iot bridge" holds the configuration (rebuilt on change);
 * the inbox and the batch have their own contexts, reset after each batch.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bv_common.h"
#include "bv_iot.h"

typedef struct BridgeConfig
{
	bool installed;
	bool enabled;
	char *host;
	int port;
	char *client_id;
	char *username;
	char *password;
	char *topics[20];
	int ntopics;
	int batch_size;
	int batch_ms;
	int keepalive;
	IotLimits lim;
	char *auth_dir;        /* where the broker's password/ACL files go, or NULL */
	char *broker_pid_file; /* the broker to signal after writing them */
	char *updated_at;
	char *conn_key; /* what requires a new connection when it changes */
} BridgeConfig;

static MemoryContext bridge_cxt = NULL;
static MemoryContext config_cxt = NULL;
static BridgeConfig cfg;
static IotMqtt mqtt;
static IotBatch batch;
static bool resend_pending = true;
static bool said_disabled = false;

static void
bridge_exit(int code, Datum arg)
{
	iot_mqtt_close(&mqtt);
}

/* Wait on the latch (and the socket, if any), serving interrupts. */
static void
wait_for(long ms, int sock)
{
	int events = WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH;
	int rc;

	if (sock >= 0)
		events |= WL_SOCKET_READABLE;
	rc = WaitLatchOrSocket(MyLatch, events, sock, Max(ms, 0), PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

void
iot_begin_tx(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

void
iot_commit_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static char *
getstr(int col)
{
	char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);

	return v ? MemoryContextStrdup(config_cxt, v) : NULL;
}

static int
getint(int col)
{
	char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);

	return v ? pg_strtoint32(v) : 0;
}

/*
 * load_config
 *		Read iot.bridge_config (and the bridge's password) into cfg.
 *		Errors (a missing secret) are logged and leave the bridge disabled.
 */
static void
load_config(void)
{
	MemoryContext old;
	static char *last_auth_key = NULL;
	char *auth_key;

	MemoryContextReset(config_cxt);
	memset(&cfg, 0, sizeof(cfg));
	iot_begin_tx();
	old = MemoryContextSwitchTo(config_cxt);
	PG_TRY();
	{
		if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'bv_iot'", true, 1) ==
				SPI_OK_SELECT &&
			SPI_processed == 1)
			cfg.installed = true;
		if (cfg.installed &&
			SPI_execute("SELECT enabled, host, port, client_id, username, "
						"CASE WHEN password_secret IS NOT NULL THEN bv.secret_get(password_secret) END, "
						"array_to_string(topics, E'\\n'), batch_size, batch_ms, keepalive_s, "
						"max_payload_bytes, max_readings, "
						"(extract(epoch FROM max_future) * 1000000)::bigint, "
						"(extract(epoch FROM max_age) * 1000000)::bigint, updated_at::text, "
						"to_jsonb(c) ->> 'auth_dir', to_jsonb(c) ->> 'broker_pid_file' "
						"FROM iot.bridge_config c",
						true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			char *topics;
			char *tok;
			char *save;

			cfg.enabled = strcmp(getstr(1), "t") == 0;
			cfg.host = getstr(2);
			cfg.port = getint(3);
			cfg.client_id = getstr(4);
			cfg.username = getstr(5);
			cfg.password = getstr(6);
			topics = getstr(7);
			cfg.batch_size = getint(8);
			cfg.batch_ms = getint(9);
			cfg.keepalive = getint(10);
			cfg.lim.max_payload_bytes = getint(11);
			cfg.lim.max_readings = getint(12);
			cfg.lim.max_future_us = pg_strtoint64(getstr(13));
			cfg.lim.max_age_us = pg_strtoint64(getstr(14));
			cfg.updated_at = getstr(15);
			cfg.auth_dir = getstr(16);
			cfg.broker_pid_file = getstr(17);
			for (tok = strtok_r(topics, "\n", &save); tok && cfg.ntopics < 16;
				 tok = strtok_r(NULL, "\n", &save))
				cfg.topics[cfg.ntopics++] = tok;
			cfg.topics[cfg.ntopics++] = "devices/+/ack";
			cfg.topics[cfg.ntopics++] = "devices/+/result";
			cfg.topics[cfg.ntopics++] = "devices/+/status";
			cfg.conn_key = psprintf("%s|%d|%s|%s|%s|%d|%s", cfg.host, cfg.port, cfg.client_id,
									cfg.username ? cfg.username : "", cfg.password ? cfg.password : "",
									cfg.keepalive, getstr(7));
		}
		MemoryContextSwitchTo(old);
		iot_commit_tx();
		/* Where the broker's files go, or the bridge's user, changed: write them again. */
		auth_key = psprintf("%s|%s|%s|%s", cfg.auth_dir ? cfg.auth_dir : "", cfg.broker_pid_file ? cfg.broker_pid_file : "",
							cfg.username ? cfg.username : "", cfg.password ? cfg.password : "");
		if (last_auth_key == NULL || strcmp(auth_key, last_auth_key) != 0)
		{
			iot_auth_reset();
			if (last_auth_key)
				pfree(last_auth_key);
			last_auth_key = MemoryContextStrdup(bridge_cxt, auth_key);
		}
		pfree(auth_key);
	}
	PG_CATCH();
	{
		ErrorData *e;

		MemoryContextSwitchTo(bridge_cxt);
		e = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING, (errmsg("bv_iot bridge cannot load its configuration: %s", e->message),
						  errhint("Check iot.bridge_config (password_secret must name a bv.secrets entry).")));
		FreeErrorData(e);
		MemoryContextReset(config_cxt);
		memset(&cfg, 0, sizeof(cfg));
		cfg.installed = true;
	}
	PG_END_TRY();
}

/* The configuration changed since it was loaded? (inside no transaction) */
static bool
config_changed(void)
{
	bool changed = true;

	iot_begin_tx();
	if (SPI_execute("SELECT updated_at::text FROM iot.bridge_config", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		changed = v == NULL || cfg.updated_at == NULL || strcmp(v, cfg.updated_at) != 0;
	}
	iot_commit_tx();
	return changed;
}

static void
set_state(const char *state, const char *error, bool reconnect)
{
	Oid types[3] = {TEXTOID, TEXTOID, BOOLOID};
	Datum args[3];
	char nulls[3] = {' ', ' ', ' '};

	args[0] = CStringGetTextDatum(state);
	args[1] = error ? CStringGetTextDatum(error) : (Datum) 0;
	nulls[1] = error ? ' ' : 'n';
	args[2] = BoolGetDatum(reconnect);
	iot_begin_tx();
	SPI_execute_with_args("UPDATE iot.bridge_counters SET state = $1, last_error = coalesce($2, last_error), "
						  "reconnects = reconnects + CASE WHEN $3 THEN 1 ELSE 0 END",
						  3, types, args, nulls, false, 0);
	iot_commit_tx();
	pgstat_report_activity(STATE_IDLE, state);
}

/*
 * The device named by a topic's second level (devices/<id>/...), or NULL
 * when the topic has no valid device id there.  *kind gets the last level.
 */
static char *
topic_device(const char *topic, const char **kind)
{
	const char *a = strchr(topic, '/');
	const char *z;
	int len, i;

	*kind = strrchr(topic, '/') ? strrchr(topic, '/') + 1 : topic;
	if (a == NULL)
		return NULL;
	a++;
	z = strchr(a, '/');
	len = z ? (int) (z - a) : (int) strlen(a);
	if (len < 1 || len > IOT_ID_MAX)
		return NULL;
	for (i = 0; i < len; i++)
		if (!((a[i] >= 'a' && a[i] <= 'z') || (a[i] >= 'A' && a[i] <= 'Z') ||
			  (a[i] >= '0' && a[i] <= '9') || a[i] == '_' || a[i] == '-'))
			return NULL;
	return pnstrdup(a, len);
}

/*
 * Is this a device report topic: devices/<id>/ack or devices/<id>/result
 * (command reports), or devices/<id>/status (online/offline, usually the
 * device's MQTT last will)?
 */
static bool
is_report(const char *topic, const char *kind)
{
	int levels = 0;
	const char *p;

	for (p = topic; *p; p++)
		levels += *p == '/';
	return levels == 2 && strncmp(topic, "devices/", 8) == 0 &&
		   (strcmp(kind, "ack") == 0 || strcmp(kind, "result") == 0 || strcmp(kind, "status") == 0);
}

/*
 * Apply one status message (SPI connected): "online" or "offline", the
 * latter usually published by the broker as the device's last will when
 * its connection dies without DISCONNECT.  Retained copies, which the
 * broker sends again on every SUBSCRIBE, are stale news and are skipped:
 * the persistent session already delivered the live message.
 */
static void
apply_status(const char *device, IotMessage *msg)
{
	Oid types[2] = {TEXTOID, TEXTOID};
	Datum args[2];

	if (msg->retained)
		return;
	if (msg->len > 64 || pg_encoding_verifymbstr(PG_UTF8, msg->payload, msg->len) != msg->len ||
		strlen(msg->payload) != (size_t) msg->len)
	{
		iot_batch_quarantine(&batch, msg->topic, device, "bad_status",
							 "A status message is \"online\" or \"offline\".", msg->payload, msg->len);
		return;
	}
	args[0] = CStringGetTextDatum(device);
	args[1] = CStringGetTextDatum(msg->payload);
	if (SPI_execute_with_args("SELECT iot._device_status($1, $2)", 2, types, args, NULL, false, 1) ==
			SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		char *res = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (res && strcmp(res, "bad_status") == 0)
			iot_batch_quarantine(&batch, msg->topic, device, "bad_status",
								 "A status message is \"online\" or \"offline\".", msg->payload, msg->len);
		else if (res && strcmp(res, "unknown_device") == 0)
			iot_batch_quarantine(&batch, msg->topic, device, "unknown_device",
								 "The topic names no registered device.", msg->payload, msg->len);
	}
}

/* Apply one command report (SPI connected). */
static void
apply_report(const char *device, const char *kind, IotMessage *msg)
{
	Oid types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum args[3];
	JsonLexContext *lex;

	lex = makeJsonLexContextCstringLen(msg->payload, msg->len, PG_UTF8, false);
	if (msg->len > 65536 || pg_encoding_verifymbstr(PG_UTF8, msg->payload, msg->len) != msg->len ||
		pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
	{
		iot_batch_quarantine(&batch, msg->topic, device, "bad_report",
							 "A command report is a JSON object with \"id\".", msg->payload, msg->len);
		return;
	}
	args[0] = CStringGetTextDatum(device);
	args[1] = CStringGetTextDatum(kind);
	args[2] = CStringGetTextDatum(msg->payload);
	if (SPI_execute_with_args("SELECT iot._command_report($1, $2, $3::jsonb)", 3, types, args, NULL,
							  false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		char *res = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (res && strcmp(res, "bad_report") == 0)
			iot_batch_quarantine(&batch, msg->topic, device, "bad_report",
								 "A command report is {\"id\": n} (ack) or {\"id\": n, \"status\": \"succeeded\"|\"failed\"} (result).",
								 msg->payload, msg->len);
	}
}

/* Validate and write messages [from, to) of the inbox (SPI connected). */
static IotFlushResult
write_messages(List *inbox, int from, int to)
{
	int i;
	MemoryContext old;

	iot_batch_reset(&batch);
	for (i = from; i < to; i++)
	{
		IotMessage *msg = list_nth(inbox, i);
		const char *kind;
		char *device;

		old = MemoryContextSwitchTo(batch.cxt);
		device = topic_device(msg->topic, &kind);
		MemoryContextSwitchTo(old);
		if (device == NULL)
		{
			batch.messages++;
			iot_batch_quarantine(&batch, msg->topic, NULL, "bad_topic",
								 "The topic does not name a device as its second level (devices/<id>/...).",
								 msg->payload, msg->len);
		}
		else if (is_report(msg->topic, kind))
		{
			batch.messages++;
			if (strcmp(kind, "status") == 0)
				apply_status(device, msg);
			else
				apply_report(device, kind, msg);
		}
		else
			iot_add_message(&batch, &cfg.lim, msg->topic, device, msg->payload, msg->len, msg->at);
	}
	return iot_batch_write(&batch, "mqtt", NULL);
}

static void
count(int64 messages, int64 readings, int64 quarantined, double write_ms, double lag_ms)
{
	Oid types[5] = {INT8OID, INT8OID, INT8OID, FLOAT8OID, FLOAT8OID};
	Datum args[5] = {Int64GetDatum(messages), Int64GetDatum(readings), Int64GetDatum(quarantined),
					 Float8GetDatum(write_ms), Float8GetDatum(lag_ms)};

	SPI_execute_with_args("UPDATE iot.bridge_counters SET messages = messages + $1, "
						  "readings = readings + $2, quarantined = quarantined + $3, "
						  "batches = batches + 1, commit_ms_total = commit_ms_total + $4, "
						  "commit_ms_max = greatest(commit_ms_max, $4), last_lag_ms = $5, "
						  "state = 'running', last_batch_at = now()",
						  5, types, args, NULL, false, 0);
}

static double
ms_since(TimestampTz t)
{
	return (double) (GetCurrentTimestamp() - t) / 1000.0;
}

/* Write message i alone; if even that fails, quarantine it. */
static void
commit_one(List *inbox, int i, TimestampTz first)
{
	IotMessage *msg = list_nth(inbox, i);

	PG_TRY();
	{
		IotFlushResult r;

		iot_begin_tx();
		r = write_messages(inbox, i, i + 1);
		count(1, r.inserted, r.quarantined, 0, ms_since(first));
		iot_commit_tx();
	}
	PG_CATCH();
	{
		ErrorData *e;
		const char *kind;

		MemoryContextSwitchTo(bridge_cxt);
		e = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		iot_begin_tx();
		iot_batch_reset(&batch);
		iot_batch_quarantine(&batch, msg->topic, topic_device(msg->topic, &kind), "write_failed",
							 e->message, msg->payload, msg->len);
		iot_batch_write(&batch, "mqtt", NULL);
		count(1, 0, 1, 0, ms_since(first));
		iot_commit_tx();
		FreeErrorData(e);
	}
	PG_END_TRY();
}

/*
 * commit_batch
 *		Write the inbox in one transaction; on failure, a message at a
 *		time.  Afterwards every message of the inbox is committed (landed
 *		or quarantined) and its PUBACK may go.
 */
static void
commit_batch(void)
{
	List *inbox = mqtt.inbox;
	int n = list_length(inbox);
	TimestampTz first = ((IotMessage *) linitial(inbox))->at;
	TimestampTz start = GetCurrentTimestamp();
	volatile bool ok = true;
	int i;

	PG_TRY();
	{
		IotFlushResult r;

		iot_begin_tx();
		r = write_messages(inbox, 0, n);
		count(n, r.inserted, r.quarantined, ms_since(start), ms_since(first));
		iot_commit_tx();
	}
	PG_CATCH();
	{
		ErrorData *e;

		MemoryContextSwitchTo(bridge_cxt);
		e = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING, (errmsg("bv_iot bridge could not write a batch of %d messages: %s", n, e->message),
						  errdetail("The batch is written again one message at a time.")));
		FreeErrorData(e);
		ok = false;
	}
	PG_END_TRY();
	if (ok)
		return;

	for (i = 0; i < n; i++)
		commit_one(inbox, i, first);
}

/* Publish the commands due now (or, after a restart, those left "sent"). */
static void
publish_commands(bool resend)
{
	List *topics = NIL;
	List *payloads = NIL;
	ListCell *a, *b;
	uint64 i;
	MemoryContext old;

	iot_begin_tx();
	if (SPI_execute(resend ? "SELECT id, device_id, payload FROM iot._commands_resend()"
						   : "SELECT id, device_id, payload FROM iot._commands_due(100)",
					false, 0) == SPI_OK_SELECT)
	{
		old = MemoryContextSwitchTo(batch.cxt);
		for (i = 0; i < SPI_processed; i++)
		{
			topics = lappend(topics, psprintf("devices/%s/commands",
											  SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2)));
			payloads = lappend(payloads, pstrdup(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3)));
		}
		MemoryContextSwitchTo(old);
		if (SPI_processed > 0)
		{
			Oid t[1] = {INT8OID};
			Datum arg[1] = {Int64GetDatum((int64) SPI_processed)};

			SPI_execute_with_args("UPDATE iot.bridge_counters SET commands_sent = commands_sent + $1", 1, t,
								  arg, NULL, false, 0);
		}
	}
	iot_commit_tx();
	/* After the commit: a crash in between leaves them "sent", resent later. */
	forboth(a, topics, b, payloads)
	{
		/* cppcheck-suppress nullPointerRedundantCheck ; forboth() checks its cells; lfirst never sees NULL */
		if (!iot_mqtt_publish(&mqtt, lfirst(a), lfirst(b)))
			break;
	}
	iot_batch_reset(&batch);
}

/* Connect and wait for the CONNACK (bounded). */
static bool
connect_broker(void)
{
	TimestampTz deadline;

	if (!iot_mqtt_connect(&mqtt, cfg.host, cfg.port, cfg.client_id, cfg.username, cfg.password,
						  cfg.keepalive))
		return false;
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);
	while (!mqtt.connected && !mqtt.lost && GetCurrentTimestamp() < deadline)
	{
		wait_for(100, iot_mqtt_socket(&mqtt));
		iot_auth_sync(cfg.auth_dir, cfg.broker_pid_file, cfg.username, cfg.password, false);
		if (!iot_mqtt_read(&mqtt, 1))
			break;
	}
	if (!mqtt.connected)
	{
		if (mqtt.error[0] == '\0')
			snprintf(mqtt.error, sizeof(mqtt.error), "no CONNACK from %s:%d", cfg.host, cfg.port);
		iot_mqtt_inbox_reset(&mqtt);
		iot_mqtt_close(&mqtt);
		return false;
	}
	return true;
}

/*
 * run_session
 *		One connection's life: read, batch, commit, acknowledge, publish
 *		commands, until the connection is lost or its configuration changes.
 */
static void
run_session(void)
{
	TimestampTz last_tick = GetCurrentTimestamp();
	bool announced = false;

	set_state("subscribing", NULL, false);
	for (;;)
	{
		long timeout = 1000;
		int n = list_length(mqtt.inbox);

		if (n > 0)
			timeout = Max(0, cfg.batch_ms - (long) ms_since(((IotMessage *) linitial(mqtt.inbox))->at));
		/* Idle, but registry changes must reach the broker soon. */
		if (cfg.auth_dir != NULL)
			timeout = Min(timeout, IOT_AUTH_POLL_MS);
		if (n < cfg.batch_size)
			wait_for(timeout, iot_mqtt_socket(&mqtt));
		else
			CHECK_FOR_INTERRUPTS();

		if (!iot_mqtt_read(&mqtt, cfg.batch_size))
			break;
		if (!announced && mqtt.subscribed)
		{
			/* "running" means: subscribed, messages flow from now on. */
			set_state("running", NULL, false);
			announced = true;
		}
		n = list_length(mqtt.inbox);
		if (n > 0 && (n >= cfg.batch_size ||
					  ms_since(((IotMessage *) linitial(mqtt.inbox))->at) >= cfg.batch_ms))
		{
			commit_batch();
			iot_mqtt_inbox_reset(&mqtt);
			iot_batch_reset(&batch);
			/* Everything queued is now for committed messages. */
			if (!iot_mqtt_flush(&mqtt))
				break;
			n = 0;
		}
		/* Between batches, also under load: registry changes reach the broker. */
		iot_auth_sync(cfg.auth_dir, cfg.broker_pid_file, cfg.username, cfg.password, false);
		if (n > 0)
			continue;
		if (mqtt.need_subscribe)
		{
			if (!iot_mqtt_subscribe(&mqtt, cfg.topics, cfg.ntopics) || !iot_mqtt_flush(&mqtt))
				break;
		}
		if (resend_pending)
		{
			publish_commands(true);
			resend_pending = false;
			if (!iot_mqtt_flush(&mqtt))
				break;
		}
		if (ms_since(last_tick) >= 1000)
		{
			last_tick = GetCurrentTimestamp();
			if (config_changed())
			{
				char *key = cfg.conn_key ? pstrdup(cfg.conn_key) : NULL;

				load_config();
				iot_auth_sync(cfg.auth_dir, cfg.broker_pid_file, cfg.username, cfg.password, true);
				if (!cfg.enabled || key == NULL || cfg.conn_key == NULL || strcmp(key, cfg.conn_key) != 0)
					return;
				ereport(LOG, (errmsg("bv_iot bridge applied a configuration change")));
			}
			publish_commands(false);
			if (!iot_mqtt_flush(&mqtt))
				break;
		}
	}
	/* Lost: what was read and not committed is redelivered by the broker. */
	iot_mqtt_inbox_reset(&mqtt);
}

void
bv_iot_bridge_main(Datum arg)
{
	BvBackoff backoff;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	bridge_cxt = AllocSetContextCreate(TopMemoryContext, "bv_iot bridge", ALLOCSET_DEFAULT_SIZES);
	config_cxt = AllocSetContextCreate(bridge_cxt, "bv_iot config", ALLOCSET_SMALL_SIZES);
	iot_mqtt_init(&mqtt, bridge_cxt);
	iot_batch_init(&batch, bridge_cxt);
	/* Before any libmosquitto state exists. */
	before_shmem_exit(bridge_exit, (Datum) 0);

	BackgroundWorkerInitializeConnection(iot_database, NULL, 0);
	pgstat_report_appname("bv_iot bridge");
	bv_backoff_init(&backoff, 200, 10000);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		load_config();
		/* Also while the bridge is disabled or cannot connect. */
		if (cfg.installed)
			iot_auth_sync(cfg.auth_dir, cfg.broker_pid_file, cfg.username, cfg.password, false);
		if (!cfg.installed || !cfg.enabled)
		{
			if (cfg.installed && mqtt.mosq != NULL)
				set_state("disabled", NULL, false);
			else if (cfg.installed && !said_disabled)
				set_state("disabled", NULL, false);
			said_disabled = cfg.installed;
			iot_mqtt_close(&mqtt);
			wait_for(!cfg.installed ? iot_naptime_ms
									: Min(iot_naptime_ms, cfg.auth_dir ? IOT_AUTH_POLL_MS : 1000),
					 -1);
			continue;
		}
		if (!connect_broker())
		{
			set_state("reconnecting", mqtt.error, true);
			wait_for(bv_backoff_next(&backoff), -1);
			continue;
		}
		said_disabled = false;
		bv_backoff_reset(&backoff);
		run_session();
		if (mqtt.lost)
		{
			set_state("reconnecting", mqtt.error, true);
			iot_mqtt_close(&mqtt);
			wait_for(bv_backoff_next(&backoff), -1);
		}
		else
			iot_mqtt_close(&mqtt);
	}
}
