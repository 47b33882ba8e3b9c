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
#include "utils/lsyscache.h"
#include "utils/typcache.h"

#include "bv_audit.h"

static void
digest_update(pg_cryptohash_ctx *ctx, const void *data, size_t len)
{
	if (pg_cryptohash_update(ctx, data, len) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a SHA-256 digest: %s", pg_cryptohash_error(ctx))));
}

PG_FUNCTION_INFO_V1(bv_audit_row_digest);

Datum
bv_audit_row_digest(PG_FUNCTION_ARGS)
{
	HeapTupleHeader rec = PG_GETARG_HEAPTUPLEHEADER(0);
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
	PG_RETURN_BYTEA_P(result);
}
