/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  One validator for every way a reading arrives (MQTT message, SQL
 *	  iot.ingest): checks a payload and appends its readings, or its
 *	  refusal, to a batch.
 *
 * A message is one reading (a JSON object) or a batch (a JSON array of
 * them).  A reading is
 *     {"device": id?, "metric": name, "value": number, "ts": time?, "payload": {...}?}
 * "device" may be left out when the topic names the device
 * (devices/<id>/telemetry); when both are there they must agree.  "ts" is
 * an ISO 8601 string or a number of seconds since the epoch; without it
 * the reading gets the time of arrival.  Other keys are ignored.
 *
 * Whole-message refusals: oversized, malformed_json (not UTF-8, not JSON,
 * or a number out of jsonb's range), not_object, empty_batch,
 * too_many_readings.  Per-reading refusals: not_object, missing_field,
 * wrong_type, non_finite, bad_metric, bad_timestamp, ts_future, ts_past,
 * device_mismatch, bad_device.  The good readings of a message land even
 * when some of its readings are refused.  unknown_device and
 * disabled_device are decided by the batch's SQL statement (batch.c),
 * against the registry as of that transaction.
 *
 * Nothing here throws on client input.  The syntax is checked with the
 * non-throwing JSON parser first; the two input functions that can still
 * throw on checked syntax (jsonb_in on a huge number, timestamptz_in on a
 * bad date) run under PG_TRY in the batch's memory context: they take no
 * locks, buffers or other resources, so FlushErrorState and a context
 * switch are a complete recovery (as pgaudit and postgres_fdw do it).
 *
 * Memory: everything is allocated in the batch's context, reset after the
 * batch is written.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bv_iot.h"

#define GROW(arr, type, cap) (arr) = (type *) repalloc((arr), sizeof(type) * (cap))

void
iot_batch_init(IotBatch *b, MemoryContext parent)
{
	memset(b, 0, sizeof(*b));
	b->cxt = AllocSetContextCreate(parent, "bv_iot batch", ALLOCSET_DEFAULT_SIZES);
	iot_batch_reset(b);
}

/* Empty the batch and free its memory. */
void
iot_batch_reset(IotBatch *b)
{
	MemoryContext cxt = b->cxt;
	MemoryContext old;

	MemoryContextReset(cxt);
	memset(b, 0, sizeof(*b));
	b->cxt = cxt;
	old = MemoryContextSwitchTo(cxt);
	b->cap = 64;
	b->device = palloc(sizeof(Datum) * b->cap);
	b->ts = palloc(sizeof(Datum) * b->cap);
	b->metric = palloc(sizeof(Datum) * b->cap);
	b->value = palloc(sizeof(Datum) * b->cap);
	b->payload = palloc(sizeof(Datum) * b->cap);
	b->topic = palloc(sizeof(Datum) * b->cap);
	b->raw = palloc(sizeof(Datum) * b->cap);
	b->value_null = palloc(sizeof(bool) * b->cap);
	b->payload_null = palloc(sizeof(bool) * b->cap);
	b->topic_null = palloc(sizeof(bool) * b->cap);
	b->capq = 8;
	b->q_topic = palloc(sizeof(Datum) * b->capq);
	b->q_device = palloc(sizeof(Datum) * b->capq);
	b->q_reason = palloc(sizeof(Datum) * b->capq);
	b->q_detail = palloc(sizeof(Datum) * b->capq);
	b->q_raw = palloc(sizeof(Datum) * b->capq);
	b->q_bytes = palloc(sizeof(Datum) * b->capq);
	b->q_topic_null = palloc(sizeof(bool) * b->capq);
	b->q_device_null = palloc(sizeof(bool) * b->capq);
	MemoryContextSwitchTo(old);
}

/* A text datum of at most max bytes of s, cut on a character boundary. */
static Datum
text_prefix(const char *s, int len, int max)
{
	if (len > max)
		len = pg_mbcliplen(s, len, max);
	return PointerGetDatum(cstring_to_text_with_len(s, len));
}

/*
 * The raw payload as text: the valid UTF-8 prefix of at most
 * IOT_RAW_PREFIX bytes (a payload that is not valid text is kept up to its
 * first bad byte).
 */
static Datum
raw_prefix(const char *raw, int rawlen)
{
	int len = Min(rawlen, IOT_RAW_PREFIX);
	int ok = 0;

	while (ok < len)
	{
		int l = pg_utf_mblen((const unsigned char *) raw + ok);

		if (raw[ok] == '\0' || ok + l > len || !pg_utf8_islegal((const unsigned char *) raw + ok, l))
			break;
		ok += l;
	}
	return PointerGetDatum(cstring_to_text_with_len(raw, ok));
}

/* Refuse a message or a reading (in the batch's context). */
void
iot_batch_quarantine(IotBatch *b, const char *topic, const char *device, const char *reason,
					 const char *detail, const char *raw, int rawlen)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	int i;

	if (b->nq == b->capq)
	{
		b->capq *= 2;
		GROW(b->q_topic, Datum, b->capq);
		GROW(b->q_device, Datum, b->capq);
		GROW(b->q_reason, Datum, b->capq);
		GROW(b->q_detail, Datum, b->capq);
		GROW(b->q_raw, Datum, b->capq);
		GROW(b->q_bytes, Datum, b->capq);
		GROW(b->q_topic_null, bool, b->capq);
		GROW(b->q_device_null, bool, b->capq);
	}
	i = b->nq++;
	b->q_topic_null[i] = topic == NULL;
	b->q_topic[i] = topic ? text_prefix(topic, strlen(topic), 256) : (Datum) 0;
	b->q_device_null[i] = device == NULL;
	b->q_device[i] = device ? raw_prefix(device, Min(strlen(device), IOT_ID_MAX)) : (Datum) 0;
	b->q_reason[i] = CStringGetTextDatum(reason);
	b->q_detail[i] = raw_prefix(detail, Min(strlen(detail), IOT_DETAIL_MAX));
	b->q_raw[i] = raw_prefix(raw, rawlen);
	b->q_bytes[i] = Int32GetDatum(rawlen);
	MemoryContextSwitchTo(old);
}

static void
add_reading(IotBatch *b, Datum device, TimestampTz ts, Datum metric, double value,
			Jsonb *payload, Datum topic, bool topic_null, Datum raw)
{
	int i;

	if (b->n == b->cap)
	{
		b->cap *= 2;
		GROW(b->device, Datum, b->cap);
		GROW(b->ts, Datum, b->cap);
		GROW(b->metric, Datum, b->cap);
		GROW(b->value, Datum, b->cap);
		GROW(b->payload, Datum, b->cap);
		GROW(b->topic, Datum, b->cap);
		GROW(b->raw, Datum, b->cap);
		GROW(b->value_null, bool, b->cap);
		GROW(b->payload_null, bool, b->cap);
		GROW(b->topic_null, bool, b->cap);
	}
	i = b->n++;
	b->device[i] = device;
	b->ts[i] = TimestampTzGetDatum(ts);
	b->metric[i] = metric;
	b->value[i] = Float8GetDatum(value);
	b->value_null[i] = false;
	b->payload[i] = payload ? JsonbPGetDatum(payload) : (Datum) 0;
	b->payload_null[i] = payload == NULL;
	b->topic[i] = topic;
	b->topic_null[i] = topic_null;
	b->raw[i] = raw;
}

static inline bool
valid_id_char(char c, bool metric)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		   c == '-' || (metric && (c == '.' || c == ':'));
}

/* A device id or metric name: 1..64 of [A-Za-z0-9_-] (metrics also ".:"). */
static inline bool
CheckId(const char *s, int len, bool metric)
{
	int i;

	if (len < 1 || len > IOT_ID_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (!valid_id_char(s[i], metric))
			return false;
	return true;
}

/* timestamptz_in without throwing: false on a bad or infinite time. */
static bool
parse_time(MemoryContext cxt, const char *s, TimestampTz *out, char *why, size_t whylen)
{
	volatile bool ok = true;

	PG_TRY();
	{
		*out = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(s),
													   ObjectIdGetDatum(InvalidOid),
													   Int32GetDatum(-1)));
	}
	PG_CATCH();
	{
		ErrorData *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		strlcpy(why, e->message, whylen);
		FreeErrorData(e);
		ok = false;
	}
	PG_END_TRY();
	if (ok && TIMESTAMP_NOT_FINITE(*out))
	{
		strlcpy(why, "The time is infinite.", whylen);
		ok = false;
	}
	return ok;
}

#define REFUSE(reason, ...)                                                  \
	do                                                                       \
	{                                                                        \
		char why_[IOT_DETAIL_MAX + 1];                                       \
		snprintf(why_, sizeof(why_), __VA_ARGS__);                           \
		iot_batch_quarantine(b, topic, device_c, reason, why_, raw, rawlen); \
		return;                                                              \
	} while (0)

/* Validate one reading (an element of the message) and add it. */
static void
add_one(IotBatch *b, const IotLimits *lim, JsonbValue *elem, int idx, int count,
		const char *topic, const char *topic_device, const char *raw, int rawlen, Datum rawd,
		TimestampTz now)
{
	JsonbContainer *c;
	JsonbValue *v;
	JsonbValue vbuf;
	const char *device_c = topic_device;
	Datum device, metric;
	double value;
	TimestampTz ts = now;
	Jsonb *payload = NULL;
	char where[32];

	if (count > 1)
		snprintf(where, sizeof(where), "reading %d of %d: ", idx + 1, count);
	else
		where[0] = '\0';

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		REFUSE("not_object", "%sA reading is a JSON object.", where);
	c = elem->val.binary.data;

	/* device */
	v = getKeyJsonValueFromContainer(c, "device", 6, &vbuf);
	if (v != NULL)
	{
		if (v->type != jbvString)
			REFUSE("wrong_type", "%s\"device\" is not a string.", where);
		if (!CheckId(v->val.string.val, v->val.string.len, false))
		{
			device_c = NULL;
			REFUSE("bad_device", "%s\"device\" is not a device id (1 to 64 of A-Z a-z 0-9 _ -).", where);
		}
		if (topic_device != NULL && (strlen(topic_device) != (size_t) v->val.string.len ||
									 memcmp(topic_device, v->val.string.val, v->val.string.len) != 0))
			REFUSE("device_mismatch", "%sThe reading names another device than its topic.", where);
		device_c = pnstrdup(v->val.string.val, v->val.string.len);
	}
	else if (topic_device == NULL)
		REFUSE("missing_field", "%s\"device\" is missing.", where);
	device = CStringGetTextDatum(device_c);

	/* metric */
	v = getKeyJsonValueFromContainer(c, "metric", 6, &vbuf);
	if (v == NULL)
		REFUSE("missing_field", "%s\"metric\" is missing.", where);
	if (v->type != jbvString)
		REFUSE("wrong_type", "%s\"metric\" is not a string.", where);
	if (!CheckId(v->val.string.val, v->val.string.len, true))
		REFUSE("bad_metric", "%s\"metric\" is not a metric name (1 to 64 of A-Z a-z 0-9 _ - . :).", where);
	metric = PointerGetDatum(cstring_to_text_with_len(v->val.string.val, v->val.string.len));

	/* value */
	v = getKeyJsonValueFromContainer(c, "value", 5, &vbuf);
	if (v == NULL)
		REFUSE("missing_field", "%s\"value\" is missing.", where);
	if (v->type == jbvString)
	{
		const char *s = v->val.string.val;
		int l = v->val.string.len;

		if ((l == 3 && pg_strncasecmp(s, "nan", 3) == 0) ||
			(l >= 3 && l <= 9 && (pg_strncasecmp(s, "inf", 3) == 0 || pg_strncasecmp(s, "-inf", 4) == 0 || pg_strncasecmp(s, "+inf", 4) == 0)))
			REFUSE("non_finite", "%s\"value\" is not a finite number.", where);
		REFUSE("wrong_type", "%s\"value\" is a string, not a number.", where);
	}
	if (v->type != jbvNumeric)
		REFUSE("wrong_type", "%s\"value\" is not a number.", where);
	value = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
											   NumericGetDatum(v->val.numeric)));
	if (isnan(value) || isinf(value))
		REFUSE("non_finite", "%s\"value\" is out of the range of double precision.", where);

	/* ts */
	v = getKeyJsonValueFromContainer(c, "ts", 2, &vbuf);
	if (v != NULL && v->type == jbvString)
	{
		char why[IOT_DETAIL_MAX];

		if (v->val.string.len > 64)
			REFUSE("bad_timestamp", "%s\"ts\" is too long to be a time.", where);
		if (!parse_time(b->cxt, pnstrdup(v->val.string.val, v->val.string.len), &ts, why, sizeof(why)))
			REFUSE("bad_timestamp", "%s\"ts\" is not a time: %s", where, why);
	}
	else if (v != NULL && v->type == jbvNumeric)
	{
		double secs = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
														 NumericGetDatum(v->val.numeric)));

		if (isnan(secs) || fabs(secs) > 1e11)
			REFUSE("bad_timestamp", "%s\"ts\" is not a number of seconds since 1970.", where);
		ts = (TimestampTz) llround(secs * USECS_PER_SEC) -
			 ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	}
	else if (v != NULL && v->type != jbvNull)
		REFUSE("wrong_type", "%s\"ts\" is neither a string nor a number.", where);
	if (ts > now + lim->max_future_us)
		REFUSE("ts_future", "%s\"ts\" is further in the future than max_future allows.", where);
	if (ts < now - lim->max_age_us)
		REFUSE("ts_past", "%s\"ts\" is older than max_age allows.", where);

	/* payload */
	v = getKeyJsonValueFromContainer(c, "payload", 7, &vbuf);
	if (v != NULL && v->type != jbvNull)
	{
		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
			REFUSE("wrong_type", "%s\"payload\" is not a JSON object.", where);
		payload = JsonbValueToJsonb(v);
	}

	add_reading(b, device, ts, metric, value, payload,
				topic ? CStringGetTextDatum(topic) : (Datum) 0, topic == NULL, rawd);
}

/*
 * iot_add_jsonb
 *		Validate a parsed message (one reading or an array of them) and
 *		add its readings and refusals to the batch.
 */
void
iot_add_jsonb(IotBatch *b, const IotLimits *lim, Jsonb *jb, const char *topic,
			  const char *topic_device, const char *raw, int rawlen, TimestampTz now)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	const char *device_c = topic_device;
	Datum rawd = raw_prefix(raw, rawlen);
	JsonbContainer *root = &jb->root;

	if (JB_ROOT_IS_SCALAR(jb))
	{
		MemoryContextSwitchTo(old);
		REFUSE("not_object", "The message is a JSON scalar, not a reading or an array of readings.");
	}
	if (JsonContainerIsArray(root))
	{
		int n = JsonContainerSize(root);
		int i;

		if (n == 0)
		{
			MemoryContextSwitchTo(old);
			REFUSE("empty_batch", "The message is an empty array.");
		}
		if (n > lim->max_readings)
		{
			MemoryContextSwitchTo(old);
			REFUSE("too_many_readings", "The message holds %d readings; max_readings is %d.", n,
				   lim->max_readings);
		}
		for (i = 0; i < n; i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(root, i);

			add_one(b, lim, e, i, n, topic, topic_device, raw, rawlen, rawd, now);
		}
	}
	else
	{
		JsonbValue e;

		e.type = jbvBinary;
		e.val.binary.data = root;
		e.val.binary.len = VARSIZE(jb) - VARHDRSZ;
		add_one(b, lim, &e, 0, 1, topic, topic_device, raw, rawlen, rawd, now);
	}
	MemoryContextSwitchTo(old);
}

/*
 * iot_add_message
 *		Validate a raw MQTT payload (any bytes) and add it to the batch.
 */
void
iot_add_message(IotBatch *b, const IotLimits *lim, const char *topic, const char *topic_device,
				const char *payload, int len, TimestampTz now)
{
	MemoryContext old;
	JsonLexContext *lex;
	JsonParseErrorType err;
	const char *raw = payload;
	int rawlen = len;
	const char *device_c = topic_device;
	volatile Jsonb *jb = NULL;
	char why[IOT_DETAIL_MAX];

	b->messages++;
	if (len > lim->max_payload_bytes)
		REFUSE("oversized", "The payload has %d bytes; max_payload_bytes is %d.", len,
			   lim->max_payload_bytes);
	if (pg_encoding_verifymbstr(PG_UTF8, payload, len) != len)
		REFUSE("malformed_json", "The payload is not valid UTF-8 text.");

	old = MemoryContextSwitchTo(b->cxt);
	lex = makeJsonLexContextCstringLen(unconstify(char *, payload), len, PG_UTF8, false);
	err = pg_parse_json(lex, &nullSemAction);
	if (err != JSON_SUCCESS)
	{
		MemoryContextSwitchTo(old);
		REFUSE("malformed_json", "The payload is not JSON.");
	}
	/* Checked syntax; jsonb_in can still refuse a number out of range. */
	PG_TRY();
	{
		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(payload, len))));
	}
	PG_CATCH();
	{
		ErrorData *e;

		MemoryContextSwitchTo(b->cxt);
		e = CopyErrorData();
		FlushErrorState();
		strlcpy(why, e->message, sizeof(why));
		jb = NULL;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	if (jb == NULL)
		REFUSE("malformed_json", "The payload is not acceptable JSON: %s", why);
	iot_add_jsonb(b, lim, (Jsonb *) jb, topic, topic_device, raw, rawlen, now);
}
