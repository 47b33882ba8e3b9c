/*-------------------------------------------------------------------------
 *
 * sink.c
 *	  What every sink kind shares: dispatch by kind, the accounting of
 *	  acknowledgements against the in-flight window, statistics, and the
 *	  flat property lists sink configurations are made of.
 *
 * A sink kind (producer.c for Kafka, mqtt.c, webhook.c) implements a
 * CdcSinkOps.  Whatever the kind, each event handed to produce() ends in
 * exactly one of
 *   cdc_sink_acked()            the receiver acknowledged it;
 *   cdc_sink_spooled()          it is durably in the webhook spool (the spool
 *                               takes over; the slot may move past it);
 *   cdc_sink_delivery_failed()  it was lost in transit: the stream restarts
 *                               from the slot and the event is produced again;
 * or in the sink being stopped (the stream restarts and replays it).  That is
 * how the slot's confirmed position never passes an event no sink holds.
 *
 * Only the worker runs this, in its main thread.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "common/pg_prng.h"

#include <unistd.h>

#include "batch.h"
#include "sink.h"
#include "window.h"

/*
 * cdc_jsonb_to_properties
 *		A sink's config object as two lists of property names and values
 *		(strings; numbers and booleans as their text).  Throws for anything
 *		that is not a flat object of scalars.
 */
void
cdc_jsonb_to_properties(Jsonb *config, List **keys, List **values)
{
	JsonbIterator *it;
	JsonbValue v;
	JsonbIteratorToken tok;
	char *key = NULL;

	*keys = NIL;
	*values = NIL;
	if (!JB_ROOT_IS_OBJECT(config))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("sink configuration must be a JSON object"),
						errhint("Pass properties as {\"bootstrap.servers\": \"host:9092\", ...}.")));
	it = JsonbIteratorInit(&config->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			char *value;

			switch (v.type)
			{
				case jbvString:
					value = pnstrdup(v.val.string.val, v.val.string.len);
					break;
				case jbvNumeric:
					value = DatumGetCString(
						DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
					break;
				case jbvBool:
					value = pstrdup(v.val.boolean ? "true" : "false");
					break;
				default:
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("sink property \"%.64s\" must be a string, number or boolean",
									key),
							 errhint("Sink properties are flat key/value pairs.")));
			}
			*keys = lappend(*keys, key);
			*values = lappend(*values, value);
		}
	}
}

/* The value of property name, or dflt. */
const char *
cdc_property(List *keys, List *values, const char *name, const char *dflt)
{
	int i;

	for (i = 0; i < list_length(keys); i++)
		if (strcmp(list_nth(keys, i), name) == 0)
			return list_nth(values, i);
	return dflt;
}

/*
 * cdc_prop / cdc_prop_int
 *		A property of a sink kind read through its declaration: the
 *		configured value, else the table's default (NULL: none).  The table
 *		is the one place a default and a range are written (issue #27 §1):
 *		validation (cdc_check_property_types), start-up (here) and the
 *		documentation (bv_cdc.sink_properties()) read it.
 */
static int cdc_property_int(List *keys, List *values, const char *name, int dflt, int min,
							int max);

static const CdcProperty *
prop_decl(const CdcProperty *props, const char *name)
{
	for (; props->name != NULL; props++)
		if (strcmp(props->name, name) == 0)
			return props;
	elog(ERROR, "bv_cdc: property \"%s\" is not declared", name);
	return NULL; /* keep the compiler quiet */
}

const char *
cdc_prop(const CdcProperty *props, List *keys, List *values, const char *name)
{
	return cdc_property(keys, values, name, prop_decl(props, name)->dflt);
}

int
cdc_prop_int(const CdcProperty *props, List *keys, List *values, const char *name)
{
	const CdcProperty *p = prop_decl(props, name);

	return cdc_property_int(keys, values, name, p->dflt ? atoi(p->dflt) : 0, (int) p->min,
							(int) p->max);
}

/* An integer property in [min, max]; throws 22023 otherwise. */
static int
cdc_property_int(List *keys, List *values, const char *name, int dflt, int min, int max)
{
	const char *v = cdc_property(keys, values, name, NULL);
	char *end;
	long n;

	if (v == NULL)
		return dflt;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid value \"%.32s\" for sink property \"%s\"", v, name),
						errdetail("\"%s\" is an integer from %d to %d.", name, min, max)));
	return (int) n;
}

/*
 * cdc_check_property_values
 *		The configured values of a kind's declared properties, as text (the
 *		worker re-validates from the stored lists): integers in their range,
 *		strings and paths of their length.  JSON types are checked before,
 *		at add_sink/alter_sink time (cdc_check_property_types).
 */
void
cdc_check_property_values(const char *kind, const CdcProperty *props, List *keys, List *values)
{
	const CdcProperty *p;

	for (p = props; p->name != NULL; p++)
	{
		const char *v = cdc_property(keys, values, p->name, NULL);
		size_t len;

		if (v == NULL)
			continue;
		if (p->type == CDC_PROP_INT)
		{
			(void) cdc_prop_int(props, keys, values, p->name);
			continue;
		}
		if (p->type != CDC_PROP_STRING && p->type != CDC_PROP_FILE)
			continue;
		len = strlen(v);
		if (len < p->min || len > p->max)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("invalid length %zu of %s sink property \"%s\"", len, kind,
								   p->name),
							errdetail("\"%s\" has " INT64_FORMAT " to " INT64_FORMAT " bytes.",
									  p->name, p->min, p->max),
							errhint("Check the value of \"%s\".", p->name)));
	}
}

/* Refuse properties a kind does not know (a typo would be silently ignored). */
void
cdc_check_properties(const char *kind, List *keys, const CdcProperty *known)
{
	int i, j;

	for (i = 0; i < list_length(keys); i++)
	{
		const char *k = list_nth(keys, i);
		bool found = false;
		StringInfoData all;

		for (j = 0; known[j].name != NULL && !found; j++)
			found = strcmp(known[j].name, k) == 0;
		if (found)
			continue;
		initStringInfo(&all);
		for (j = 0; known[j].name != NULL; j++)
			appendStringInfo(&all, "%s%s", j > 0 ? ", " : "", known[j].name);
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("unknown %s sink property \"%.64s\"", kind, k),
						errhint("Valid properties are: %s.", all.data)));
	}
}

static const char *
json_type_name(enum jbvType t)
{
	switch (t)
	{
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvNull:
			return "null";
		default:
			return "an array or object";
	}
}

static const char *
prop_type_name(CdcPropType t)
{
	switch (t)
	{
		case CDC_PROP_INT:
			return "an integer (a JSON number)";
		case CDC_PROP_BOOL:
			return "true or false";
		case CDC_PROP_FILE:
			return "a file path (a JSON string)";
		default:
			return "a JSON string";
	}
}

/* One property against its declaration: JSON type, range, file. */
static void
check_property(const char *kind, const CdcProperty *p, const JsonbValue *v)
{
	bool ok;

	switch (p->type)
	{
		case CDC_PROP_INT:
			ok = v->type == jbvNumeric;
			break;
		case CDC_PROP_BOOL:
			ok = v->type == jbvBool;
			break;
		default:
			ok = v->type == jbvString;
			break;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s sink property \"%s\" must be %s, not %s", kind, p->name,
						prop_type_name(p->type), json_type_name(v->type)),
				 errhint("Write it as in {\"%s\": %s}.", p->name,
						 p->type == CDC_PROP_INT    ? "5000"
						 : p->type == CDC_PROP_BOOL ? "true"
													: "\"...\"")));
	if (p->type == CDC_PROP_INT)
	{
		char *text = DatumGetCString(
			DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		char *end;
		long long n;

		errno = 0;
		n = strtoll(text, &end, 10);
		if (errno != 0 || end == text || *end != '\0' || n < p->min || n > p->max)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("invalid value %.32s for %s sink property \"%s\"", text, kind,
								   p->name),
							errdetail("\"%s\" is an integer from " INT64_FORMAT " to " INT64_FORMAT
									  ".",
									  p->name, p->min, p->max),
							errhint("Omit it to use the default%s%s.", p->dflt ? ", " : "",
									p->dflt ? p->dflt : "")));
	}
	else if (p->type == CDC_PROP_STRING || p->type == CDC_PROP_FILE)
	{
		int len = v->val.string.len;

		if (len < p->min || len > p->max || memchr(v->val.string.val, '\0', len) != NULL)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("invalid length %d of %s sink property \"%s\"", len, kind,
								   p->name),
							errdetail("\"%s\" has " INT64_FORMAT " to " INT64_FORMAT " bytes.",
									  p->name, p->min, p->max),
							errhint("Check the value of \"%s\".", p->name)));
		if (p->type == CDC_PROP_FILE)
		{
			char *path = pnstrdup(v->val.string.val, len);

			/*
			 * The worker reads the file as the server's OS user: naming one
			 * (and learning whether it exists) is a superuser's choice, as
			 * for Kafka's file properties (producer.c).  The worker re-checks
			 * what was set.
			 */
			if (!IsBackgroundWorker && !superuser_arg(GetOuterUserId()))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("only a superuser may set %s sink property \"%s\"", kind, p->name),
						 errdetail("It names a file the worker reads as the server's operating "
								   "system user."),
						 errhint("Ask a superuser to add or alter this sink.")));
			if (access(path, R_OK) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s sink property \"%s\": could not read file \"%.200s\": %m",
								kind, p->name, path),
						 errdetail("The worker reads it (as the server's operating system user) "
								   "whenever the sink starts."),
						 errhint("Install the file first, readable by the server, then add or "
								 "alter the sink.")));
		}
	}
}

/*
 * cdc_check_property_types
 *		The configuration's size, and each property's JSON type and range
 *		against the kind's declaration.  Properties a kind does not declare
 *		are refused by its validate(), except for kinds with open properties
 *		(Kafka: librdkafka's), whose undeclared values must be scalars of a
 *		bounded size.
 */
void
cdc_check_property_types(const CdcSinkOps *ops, Jsonb *config)
{
	JsonbIterator *it;
	JsonbValue v;
	JsonbIteratorToken tok;
	char *key = NULL;
	int n = 0;

	if (!JB_ROOT_IS_OBJECT(config) || JB_ROOT_IS_SCALAR(config))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("sink configuration must be a JSON object"),
						errhint("Pass properties as {\"bootstrap.servers\": \"host:9092\", ...}.")));
	if (VARSIZE(config) > CDC_MAX_CONFIG_BYTES)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						errmsg("sink configuration is too large (%zu bytes)", (size_t) VARSIZE(config)),
						errdetail("A sink configuration has at most %d bytes.", CDC_MAX_CONFIG_BYTES),
						errhint("Keep certificates and secrets in files and in bv.secrets; "
								"name them in the configuration.")));
	it = JsonbIteratorInit(&config->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const CdcProperty *p = NULL;
		int i;

		if (tok == WJB_KEY)
		{
			if (v.val.string.len > CDC_MAX_PROPERTY_KEY || v.val.string.len == 0)
				ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								errmsg("invalid %s sink property name \"%.64s\"", ops->kind,
									   pnstrdup(v.val.string.val, Min(v.val.string.len, 64))),
								errdetail("A property name has 1 to %d bytes.",
										  CDC_MAX_PROPERTY_KEY),
								errhint("See docs/bv_cdc.md for the properties of each kind.")));
			key = pnstrdup(v.val.string.val, v.val.string.len);
			if (++n > CDC_MAX_PROPERTIES)
				ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
								errmsg("sink configuration has too many properties"),
								errdetail("A sink has at most %d properties.", CDC_MAX_PROPERTIES),
								errhint("Remove the properties that keep their defaults.")));
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		for (i = 0; ops->properties != NULL && ops->properties[i].name != NULL; i++)
			if (strcmp(ops->properties[i].name, key) == 0)
				p = &ops->properties[i];
		if (p != NULL)
			check_property(ops->kind, p, &v);
		else if (ops->open_properties)
		{
			if (v.type != jbvString && v.type != jbvNumeric && v.type != jbvBool)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s sink property \"%.64s\" must be a string, number or boolean, "
								"not %s",
								ops->kind, key, json_type_name(v.type)),
						 errhint("Sink properties are flat key/value pairs.")));
			if (v.type == jbvString && v.val.string.len > CDC_MAX_STRING_VALUE)
				ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								errmsg("%s sink property \"%.64s\" is too long (%d bytes)",
									   ops->kind, key, v.val.string.len),
								errdetail("A property value has at most %d bytes.",
										  CDC_MAX_STRING_VALUE),
								errhint("Check the value of \"%.64s\".", key)));
		}
	}
}

/*
 * cdc_secret_get
 *		A secret of bv_core's store (bv.secret_get), in the caller's memory
 *		context; NULL when it does not exist or cannot be opened (the reason
 *		is logged without the value).  Runs its own transaction, so only
 *		outside one (the worker between messages).
 */
char *
cdc_secret_get(const char *name)
{
	MemoryContext outer = CurrentMemoryContext;
	Oid argtypes[1] = {TEXTOID};
	Datum args[1];
	char *volatile value = NULL;

	PG_TRY();
	{
		cdc_begin_batch("bv_cdc: reading a sink secret");
		args[0] = CStringGetTextDatum(name);
		if (SPI_execute_with_args("SELECT bv.secret_get(s.name) FROM bv.secrets s WHERE s.name = $1",
								  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read bv.secrets");
		if (SPI_processed > 0)
		{
			char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (v != NULL)
				value = MemoryContextStrdup(outer, v);
		}
		cdc_end_batch();
	}
	PG_CATCH();
	{
		ereport(WARNING, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						  errmsg("bv_cdc could not read secret \"%s\": %s", name,
								 cdc_batch_failed(outer))));
		value = NULL;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return value;
}

/* ---- acknowledgements ---- */

static void (*keepalive_hook)(void) = NULL;

/* The stream's keepalive, for kinds that wait in produce() (see sink.h). */
void
cdc_sink_set_keepalive(void (*hook)(void))
{
	keepalive_hook = hook;
}

void
cdc_sink_keepalive(void)
{
	if (keepalive_hook != NULL)
		keepalive_hook();
}

void
cdc_sink_acked(CdcSink *sink, uint64 opaque, size_t bytes)
{
	XLogRecPtr lsn = cdc_window_delivered(opaque, true);

	sink->pending--;
	sink->n_acked++;
	sink->n_bytes += bytes;
	if (lsn > sink->acked_lsn)
		sink->acked_lsn = lsn;
	sink->down = false;
	sink->stall_since = 0;
	sink->stalled = false;
}

void
cdc_sink_spooled(CdcSink *sink, uint64 opaque)
{
	(void) cdc_window_delivered(opaque, true);
	sink->pending--;
	sink->stall_since = 0;
	sink->stalled = false;
}

void
cdc_sink_delivery_failed(CdcSink *sink, uint64 opaque, const char *fmt, ...)
{
	va_list ap;

	(void) cdc_window_delivered(opaque, false);
	sink->pending--;
	sink->n_errors++;
	sink->failed = true;
	va_start(ap, fmt);
	vsnprintf(sink->last_error, sizeof(sink->last_error), fmt, ap);
	va_end(ap);
	sink->new_error = true;
}

void
cdc_sink_note_error(CdcSink *sink, bool down, const char *fmt, ...)
{
	va_list ap;

	sink->n_errors++;
	if (down)
		sink->down = true;
	va_start(ap, fmt);
	vsnprintf(sink->last_error, sizeof(sink->last_error), fmt, ap);
	va_end(ap);
	sink->new_error = true;
}

/* ---- dispatch ---- */

static bool
cdc_sink_start(CdcSink *sink, char *errbuf, size_t errlen)
{
	volatile bool ok = false;

	if (sink->ops == NULL) /* config.c found no such kind */
	{
		snprintf(errbuf, errlen, "unknown sink kind \"%s\"", sink->kind);
		return false;
	}
	sink->pending = 0;
	sink->failed = false;
	/* The configuration was valid when it was set; check again, without throwing. */
	PG_TRY();
	{
		sink->ops->validate(sink->conf_keys, sink->conf_values);
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		FlushErrorState();
		snprintf(errbuf, errlen, "%s", edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return ok && sink->ops->start(sink, errbuf, errlen);
}

/*
 * cdc_sink_start_isolated
 *		Start a sink; when it cannot start, it alone is "failed" (state and
 *		last_error in bv_cdc.stats) and retried on its own back-off, while
 *		the other sinks stream on (ADR 0032).
 */
bool
cdc_sink_start_isolated(CdcSink *sink)
{
	char errbuf[512];
	int delay;

	if (cdc_sink_start(sink, errbuf, sizeof(errbuf)))
	{
		if (sink->start_failed)
			ereport(LOG, (errmsg("bv_cdc sink \"%s\" started", sink->name)));
		sink->start_failed = false;
		sink->retry_attempt = 0;
		return true;
	}
	cdc_sink_stop(sink);
	if (!sink->start_failed || sink->retry_attempt == 0)
		ereport(WARNING,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("bv_cdc could not start sink \"%s\": %s", sink->name, errbuf),
				 errdetail("The other sinks go on; changes routed to this one hold the slot "
						   "until it starts."),
				 errhint("The worker retries with back-off; if the sink's configuration is "
						 "wrong, change it with bv_cdc.alter_sink.")));
	sink->start_failed = true;
	/* Exponential from 200 ms up to bv_cdc.retry_max, with half jitter. */
	delay = 200;
	for (int i = 0; i < sink->retry_attempt && delay < cdc_retry_max_ms; i++)
		delay *= 2;
	delay = Min(delay, cdc_retry_max_ms);
	delay = delay / 2 + (int) (pg_prng_double(&pg_global_prng_state) * (delay / 2));
	sink->retry_attempt++;
	sink->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);
	strlcpy(sink->last_error, errbuf, sizeof(sink->last_error));
	sink->new_error = true;
	sink->n_errors++;
	return false;
}

/* Retry the failed sinks that are due; true when one of them started. */
bool
cdc_sinks_retry_failed(CdcConfig *cfg)
{
	TimestampTz now = GetCurrentTimestamp();
	bool started = false;
	int i;

	for (i = 0; i < cfg->nsinks; i++)
	{
		CdcSink *s = &cfg->sinks[i];

		if (s->start_failed && s->impl == NULL && now >= s->retry_at &&
			cdc_sink_start_isolated(s))
			started = true;
	}
	return started;
}

void
cdc_sink_stop(CdcSink *sink)
{
	if (sink->impl != NULL && sink->ops != NULL)
		sink->ops->stop(sink);
	sink->impl = NULL;
	sink->pending = 0;
}

void
cdc_sink_rebind(CdcSink *sink)
{
	if (sink->ops != NULL && sink->ops->rebind != NULL)
		sink->ops->rebind(sink);
}

CdcProduceResult
cdc_sink_produce(CdcSink *sink, const CdcEvent *ev, char **err)
{
	return sink->ops->produce(sink, ev, err);
}

/* Serve every sink's acknowledgements, waiting at most timeout_ms once. */
void
cdc_sinks_poll(CdcConfig *cfg, int timeout_ms)
{
	int i, waiter = -1, best = -1;

	/* The most urgent sink does the waiting, the others are only served. */
	for (i = 0; i < cfg->nsinks; i++)
		if (cfg->sinks[i].impl != NULL)
		{
			int w = cfg->sinks[i].ops->wait_ms ? cfg->sinks[i].ops->wait_ms(&cfg->sinks[i]) : -1;

			if (waiter < 0 || (w >= 0 && (best < 0 || w < best)))
			{
				waiter = i;
				best = w;
			}
		}
	if (best >= 0 && best < timeout_ms)
		timeout_ms = best;
	for (i = 0; i < cfg->nsinks; i++)
		if (cfg->sinks[i].impl != NULL)
			cfg->sinks[i].ops->poll(&cfg->sinks[i], i == waiter ? timeout_ms : 0);
}

/* How soon some sink wants to be polled again: ms, or -1 for no hurry. */
int
cdc_sinks_wait_ms(CdcConfig *cfg)
{
	int i, best = -1;

	for (i = 0; i < cfg->nsinks; i++)
		if (cfg->sinks[i].impl != NULL && cfg->sinks[i].ops->wait_ms != NULL)
		{
			int w = cfg->sinks[i].ops->wait_ms(&cfg->sinks[i]);

			if (w >= 0 && (best < 0 || w < best))
				best = w;
		}
	return best;
}

/* Copy the sinks' local counters to shared memory. */
void
cdc_sinks_publish(CdcConfig *cfg)
{
	int i;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&cdc_shared->mutex);
	for (i = 0; i < cfg->nsinks; i++)
	{
		CdcSink *s = &cfg->sinks[i];
		CdcSinkStats *st = &cdc_shared->sinks[s->stats_slot];
		const char *state;

		if (s->n_acked > 0)
			st->last_ack = now;
		st->events += s->n_acked;
		st->bytes += s->n_bytes;
		st->errors += s->n_errors;
		if (s->acked_lsn > st->acked_lsn)
			st->acked_lsn = s->acked_lsn;
		if (s->new_error)
			strlcpy(st->last_error, s->last_error, sizeof(st->last_error));
		/* Stalled: messages in flight and no acknowledgement for stall_timeout. */
		if (s->impl == NULL || s->pending <= 0)
		{
			s->stall_since = 0;
			s->stalled = false;
		}
		else if (s->stall_since == 0)
			s->stall_since = now;
		else
			s->stalled = cdc_stall_timeout_ms > 0 &&
						 TimestampDifferenceExceeds(s->stall_since, now, cdc_stall_timeout_ms);
		/*
		 * A sink that cannot start is "failed" when it has delivered nothing
		 * since the worker started (a configuration or environment problem:
		 * a file gone, an unknown host), else "down" (its broker went away).
		 */
		if (s->paused)
			state = "paused";
		else if (s->start_failed)
			state = st->events > 0 ? "down" : "failed";
		else if (s->down)
			state = "down";
		else if (s->stalled)
			state = "stalled";
		else
			state = s->impl ? "up" : "idle";
		strlcpy(st->state, state, sizeof(st->state));
		strlcpy(st->kind, s->kind, sizeof(st->kind));
		if (s->ops->publish_stats != NULL && s->impl != NULL)
			s->ops->publish_stats(s, st);
		s->n_acked = s->n_bytes = s->n_errors = 0;
		s->new_error = false;
	}
	SpinLockRelease(&cdc_shared->mutex);
}

int64
cdc_sinks_pending(CdcConfig *cfg)
{
	int64 n = 0;
	int i;

	for (i = 0; i < cfg->nsinks; i++)
		n += cfg->sinks[i].pending;
	return n;
}

bool
cdc_sinks_failed(CdcConfig *cfg)
{
	int i;

	for (i = 0; i < cfg->nsinks; i++)
		if (cfg->sinks[i].failed)
			return true;
	return false;
}
