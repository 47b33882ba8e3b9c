/*-------------------------------------------------------------------------
 *
 * api.c
 *	  SQL-callable C functions of bv_cdc.
 *
 *   bv_cdc.validate_sink(kind, config)  refuses a configuration librdkafka
 *        would refuse (rd_kafka_conf_set on every property), or one that
 *        weakens delivery guarantees; called by bv_cdc.add_sink, so a bad
 *        sink is refused when it is set, with the reason.
 *   bv_cdc.stats_raw()  the worker's counters from shared memory, one row
 *        per sink (view bv_cdc.stats adds the slot's lag).
 *   bv_cdc.config_changed()  trigger on the configuration tables: flags
 *        the transaction, so that its commit wakes the worker (bv_cdc.c).
 *
 * Concurrency: stats_raw copies the shared area under its spinlock, then
 * builds rows from the copy.  Memory: per-call, in the caller's contexts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "cdc.h"
#include "kinds.h"
#include "bv_common.h"

PG_FUNCTION_INFO_V1(bv_cdc_validate_sink);

/*
 * bv_cdc.validate_sink(kind text, config jsonb): void, or an error that
 * names the property and the reason (the kind's validate function).
 */
Datum
bv_cdc_validate_sink(PG_FUNCTION_ARGS)
{
	char *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb *config = PG_GETARG_JSONB_P(1);
	const CdcSinkOps *ops = cdc_sink_ops(kind);
	List *keys, *values;

	if (ops == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("unknown sink kind \"%.32s\"", kind),
						errdetail("bv_cdc supports sinks of kind %s.", cdc_sink_kind_names()),
						errhint("Use bv_cdc.add_sink(name, 'kafka', config).")));
	cdc_check_property_types(ops, config);
	cdc_jsonb_to_properties(config, &keys, &values);
	ops->validate(keys, values);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(bv_cdc_sink_properties);

/*
 * bv_cdc.sink_properties(): the declared properties of every sink kind
 * (kind, name, type, default, min, max, secret), from the same tables that
 * validation and start-up read; docs/bv_cdc.md's table is generated from it.
 */
Datum
bv_cdc_sink_properties(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const types[] = {"string", "integer", "boolean", "file"};
	int k;

	InitMaterializedSRF(fcinfo, 0);
	for (k = 0; k < cdc_sink_kind_count(); k++)
	{
		const CdcSinkOps *ops = cdc_sink_kind(k);
		const CdcProperty *p;

		for (p = ops->properties; p != NULL && p->name != NULL; p++)
		{
			Datum v[7];
			bool n[7] = {false};

			v[0] = CStringGetTextDatum(ops->kind);
			v[1] = CStringGetTextDatum(p->name);
			v[2] = CStringGetTextDatum(types[p->type]);
			if (p->dflt != NULL)
				v[3] = CStringGetTextDatum(p->dflt);
			else
				n[3] = true;
			v[4] = Int64GetDatum(p->min);
			v[5] = Int64GetDatum(p->max);
			n[4] = n[5] = p->type == CDC_PROP_BOOL;
			v[6] = BoolGetDatum(p->secret);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
		}
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(bv_cdc_invoker);

/*
 * bv_cdc.invoker(): the role that called bv_cdc's API.  Inside a SECURITY
 * DEFINER function current_user is the owner; the outer user id is the
 * role the session runs as (SET ROLE included), whose SELECT privileges
 * limit what it may route or snapshot (issue #17 item 14).
 */
Datum
bv_cdc_invoker(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(GetOuterUserId());
}

PG_FUNCTION_INFO_V1(bv_cdc_spool_changed);

/* bv_cdc.spool_changed(): the worker re-reads the spool after this commit. */
Datum
bv_cdc_spool_changed(PG_FUNCTION_ARGS)
{
	cdc_spool_dirty = true;
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(bv_cdc_verify_signature);

/*
 * bv_cdc.verify_signature(secret, header, body, tolerance): true when the
 * header signs the body with the secret within tolerance seconds of now.
 * Not STRICT: a NULL anywhere is false, never NULL (so that "IF NOT
 * bv_cdc.verify_signature(...)" cannot let a request without a header in).
 */
Datum
bv_cdc_verify_signature(PG_FUNCTION_ARGS)
{
	text *secret, *header, *body;
	int32 tolerance;
	char *hdr;
	BvSignatureResult r;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_BOOL(false);
	secret = PG_GETARG_TEXT_PP(0);
	header = PG_GETARG_TEXT_PP(1);
	body = PG_GETARG_TEXT_PP(2);
	tolerance = PG_ARGISNULL(3) ? 300 : PG_GETARG_INT32(3);
	if (tolerance < 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("tolerance must not be negative"),
						errhint("Use the number of seconds a signature stays valid, e.g. 300.")));
	if (VARSIZE_ANY_EXHDR(secret) == 0)
		PG_RETURN_BOOL(false);
	hdr = text_to_cstring(header);
	r = bv_signature_verify((const uint8 *) VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), hdr,
							(const uint8 *) VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body), tolerance,
							(int64) time(NULL));
	PG_RETURN_BOOL(r == BV_SIG_OK);
}

PG_FUNCTION_INFO_V1(bv_cdc_config_changed);

/* Trigger: the transaction changed the configuration; apply on commit. */
Datum
bv_cdc_config_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						errmsg("bv_cdc.config_changed() must be called as a trigger"),
						errhint("It is attached to bv_cdc.sinks and bv_cdc.routes.")));
	cdc_config_dirty = true;
	return PointerGetDatum(NULL);
}

static Datum
lsn_or_null(XLogRecPtr lsn, bool *isnull)
{
	*isnull = lsn == InvalidXLogRecPtr;
	return LSNGetDatum(lsn);
}

static Datum
ts_or_null(TimestampTz ts, bool *isnull)
{
	*isnull = ts == 0;
	return TimestampTzGetDatum(ts);
}

PG_FUNCTION_INFO_V1(bv_cdc_stats_raw);

/* bv_cdc.stats_raw(): one row per configured sink (see the view). */
Datum
bv_cdc_stats_raw(PG_FUNCTION_ARGS)
{
#define STATS_COLS 22
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CdcShared *copy;
	TimestampTz now = GetCurrentTimestamp();
	int i;

	if (cdc_shared == NULL)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("bv_cdc is not loaded"),
						errhint("Add bv_cdc to shared_preload_libraries and restart the server.")));
	InitMaterializedSRF(fcinfo, 0);

	copy = palloc(sizeof(CdcShared));
	SpinLockAcquire(&cdc_shared->mutex);
	memcpy(copy, cdc_shared, sizeof(CdcShared));
	SpinLockRelease(&cdc_shared->mutex);

	for (i = 0; i < BV_CDC_MAX_SINKS; i++)
	{
		CdcSinkStats *s = &copy->sinks[i];
		Datum values[STATS_COLS];
		bool nulls[STATS_COLS];
		long secs;
		int usecs;
		int c = 0;

		if (!s->in_use)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[c++] = CStringGetTextDatum(s->name);
		values[c++] = CStringGetTextDatum(s->state);
		values[c++] = Int64GetDatum((int64) s->events);
		values[c++] = Int64GetDatum((int64) s->bytes);
		values[c] = lsn_or_null(s->acked_lsn, &nulls[c]);
		c++;
		values[c] = lsn_or_null(copy->confirmed_lsn, &nulls[c]);
		c++;
		values[c] = lsn_or_null(copy->received_lsn, &nulls[c]);
		c++;
		values[c++] = Int64GetDatum((int64) copy->inflight);
		if (copy->oldest_pending_commit != 0 && now > copy->oldest_pending_commit)
		{
			TimestampDifference(copy->oldest_pending_commit, now, &secs, &usecs);
			values[c++] = Int64GetDatum((int64) secs * 1000 + usecs / 1000);
		}
		else
			values[c++] = Int64GetDatum(0);
		values[c++] = Int64GetDatum((int64) s->errors);
		values[c++] = Int64GetDatum((int64) s->retries);
		if (s->last_error[0])
			values[c++] = CStringGetTextDatum(s->last_error);
		else
			nulls[c++] = true;
		values[c] = ts_or_null(s->last_ack, &nulls[c]);
		c++;
		values[c++] = CStringGetTextDatum(copy->state);
		values[c++] = Int32GetDatum(copy->worker_pid);
		values[c++] = Int64GetDatum((int64) copy->quarantined);
		values[c] = ts_or_null(copy->last_heartbeat, &nulls[c]);
		c++;
		values[c++] = CStringGetTextDatum(s->kind[0] ? s->kind : "kafka");
		if (s->circuit[0])
			values[c++] = CStringGetTextDatum(s->circuit);
		else
			nulls[c++] = true;
		values[c++] = Int64GetDatum(s->spooled);
		values[c++] = Int64GetDatum((int64) s->dead_letters);
		values[c++] = Int64GetDatum((int64) s->spool_retries);
		Assert(c == STATS_COLS);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(bv_cdc_worker_raw);

/* bv_cdc.worker_raw(): the worker's own state, one row. */
Datum
bv_cdc_worker_raw(PG_FUNCTION_ARGS)
{
	TupleDesc tupdesc;
	Datum values[8];
	bool nulls[8];
	CdcShared *copy;

	if (cdc_shared == NULL)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("bv_cdc is not loaded"),
						errhint("Add bv_cdc to shared_preload_libraries and restart the server.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	copy = palloc(sizeof(CdcShared));
	SpinLockAcquire(&cdc_shared->mutex);
	memcpy(copy, cdc_shared, sizeof(CdcShared));
	SpinLockRelease(&cdc_shared->mutex);
	memset(nulls, 0, sizeof(nulls));
	values[0] = CStringGetTextDatum(copy->state);
	values[1] = Int32GetDatum(copy->worker_pid);
	values[2] = lsn_or_null(copy->received_lsn, &nulls[2]);
	values[3] = lsn_or_null(copy->confirmed_lsn, &nulls[3]);
	values[4] = Int64GetDatum((int64) copy->inflight);
	values[5] = Int64GetDatum((int64) copy->restarts);
	values[6] = Int64GetDatum((int64) copy->quarantined);
	if (copy->last_error[0])
		values[7] = CStringGetTextDatum(copy->last_error);
	else
		nulls[7] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
