/*-------------------------------------------------------------------------
 *
 * digest.c
 *	  bv_audit.row_digest(record): the SHA-256 digest of one audit record.
 *
 * The seal (see docs/adr/0010-audit-tamper-evidence.md) chains digests of
 * audit records; this function computes one.  Writers never call it: the
 * sealer computes digests of records that are already committed, so the
 * hot path pays nothing for tamper evidence.
 *
 * The digest must survive the schema changes bv_audit itself makes to an
 * audit table (a mirrored ADD COLUMN, RENAME COLUMN, a safe type change),
 * but change with any edit of a value.  So it covers, for every non-NULL
 * attribute in attnum order, the attnum (2 bytes), the length (4 bytes)
 * and the bytes of the value's text output.  Attnums are stable across
 * renames and type changes; a new column is NULL in old records, so it
 * adds nothing; the text of a value is unchanged by the widening casts the
 * event trigger allows.  Lengths make the encoding unambiguous.
 *
 * Text output depends on session settings (TimeZone for timestamptz,
 * DateStyle, IntervalStyle, extra_float_digits, bytea_output, lc_monetary
 * for money, search_path for reg* types), so a digest is only comparable
 * with another computed under the same settings.  row_digest() (the
 * format-2 digest of seals from 0.3.0 on) computes under one fixed,
 * canonical set (canonical_gucs below), whatever the caller's session
 * says; _row_digest_v1() (format-1 seals, taken before 0.3.0 by sessions
 * with their default settings) under the session's reset values, the
 * nearest thing to what the pg_cron sealer used.  Settings are changed at
 * a new GUC nest level and restored before returning, the way a function's
 * SET clause is (on error, transaction abort restores them); when they are
 * already what is wanted (seal() and verify() set the canonical ones once
 * in their SET clauses) nothing is changed, so a seal pays one string
 * comparison per setting per record.
 *
 * Output functions are looked up per call (the sealer is not a hot path);
 * allocations are in the caller's context.  No locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"

#include "bv_audit.h"

/* The settings that change some type's text output, and their canonical values. */
typedef struct DigestGuc
{
	const char *name;
	const char *canonical;
} DigestGuc;

static const DigestGuc canonical_gucs[] = {
	{"TimeZone", "UTC"},
	{"DateStyle", "ISO, YMD"},
	{"IntervalStyle", "postgres"},
	{"extra_float_digits", "1"},
	{"bytea_output", "hex"},
	{"lc_monetary", "C"},
	{"search_path", "pg_catalog, pg_temp"},
};

#define N_DIGEST_GUCS lengthof(canonical_gucs)

static void
digest_update(pg_cryptohash_ctx *ctx, const void *data, size_t len)
{
	if (pg_cryptohash_update(ctx, data, len) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a SHA-256 digest: %s", pg_cryptohash_error(ctx))));
}

/*
 * Make every setting of canonical_gucs take the value wanted[i] (canonical
 * or reset), at a new GUC nest level.  Returns the nest level to restore,
 * or -1 when every setting already had its value.
 */
static int
digest_settings_push(const char *const *wanted)
{
	int nestlevel = -1;
	size_t i;

	for (i = 0; i < N_DIGEST_GUCS; i++)
	{
		const char *now = GetConfigOption(canonical_gucs[i].name, false, false);

		if (now != NULL && wanted[i] != NULL && strcmp(now, wanted[i]) == 0)
			continue;
		if (nestlevel < 0)
			nestlevel = NewGUCNestLevel();
		(void) set_config_option(canonical_gucs[i].name, wanted[i], PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}
	return nestlevel;
}

/* The digest of one record under the current settings. */
static bytea *
digest_record(HeapTupleHeader rec)
{
	Oid tuptype = HeapTupleHeaderGetTypeId(rec);
	int32 tuptypmod = HeapTupleHeaderGetTypMod(rec);
	TupleDesc desc = lookup_rowtype_tupdesc(tuptype, tuptypmod);
	HeapTupleData tuple;
	pg_cryptohash_ctx *ctx;
	bytea *result;
	int i;

	tuple.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = rec;

	ctx = pg_cryptohash_create(PG_SHA256);
	if (ctx == NULL || pg_cryptohash_init(ctx) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not start a SHA-256 digest")));

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool isnull;
		Datum value;
		Oid outfunc;
		bool isvarlena;
		char *text;
		uint16 attnum;
		uint32 len;

		if (att->attisdropped)
			continue;
		value = heap_getattr(&tuple, i + 1, desc, &isnull);
		if (isnull)
			continue;
		getTypeOutputInfo(att->atttypid, &outfunc, &isvarlena);
		text = OidOutputFunctionCall(outfunc, value);
		attnum = (uint16) (i + 1);
		len = (uint32) strlen(text);
		digest_update(ctx, &attnum, sizeof(attnum));
		digest_update(ctx, &len, sizeof(len));
		digest_update(ctx, text, len);
		pfree(text);
	}

	result = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	SET_VARSIZE(result, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	if (pg_cryptohash_final(ctx, (uint8 *) VARDATA(result), PG_SHA256_DIGEST_LENGTH) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not finish a SHA-256 digest: %s", pg_cryptohash_error(ctx))));
	pg_cryptohash_free(ctx);
	ReleaseTupleDesc(desc);
	return result;
}

/* The digest of a record under the settings wanted[]. */
static bytea *
digest_record_with(HeapTupleHeader rec, const char *const *wanted)
{
	int nestlevel = digest_settings_push(wanted);
	bytea *result = digest_record(rec);

	if (nestlevel >= 0)
		AtEOXact_GUC(true, nestlevel);
	return result;
}

PG_FUNCTION_INFO_V1(bv_audit_row_digest);

/* Format 2: the digest under the canonical settings, whatever the session's. */
Datum
bv_audit_row_digest(PG_FUNCTION_ARGS)
{
	const char *wanted[N_DIGEST_GUCS];
	size_t i;

	for (i = 0; i < N_DIGEST_GUCS; i++)
		wanted[i] = canonical_gucs[i].canonical;
	PG_RETURN_BYTEA_P(digest_record_with(PG_GETARG_HEAPTUPLEHEADER(0), wanted));
}

PG_FUNCTION_INFO_V1(bv_audit_row_digest_v1);

/*
 * Format 1 (seals taken before 0.3.0): the digest under the session's reset
 * values, i.e. the defaults a session gets from the configuration, the
 * database, the role and the connection.
 */
Datum
bv_audit_row_digest_v1(PG_FUNCTION_ARGS)
{
	const char *wanted[N_DIGEST_GUCS];
	char *copies[N_DIGEST_GUCS];
	bytea *result;
	size_t i;

	/* Reset strings live in GUC memory; copy them before any setting moves. */
	for (i = 0; i < N_DIGEST_GUCS; i++)
	{
		const char *reset = GetConfigOptionResetString(canonical_gucs[i].name);

		copies[i] = reset != NULL ? pstrdup(reset) : NULL;
		wanted[i] = copies[i];
	}
	result = digest_record_with(PG_GETARG_HEAPTUPLEHEADER(0), wanted);
	for (i = 0; i < N_DIGEST_GUCS; i++)
		if (copies[i] != NULL)
			pfree(copies[i]);
	PG_RETURN_BYTEA_P(result);
}
