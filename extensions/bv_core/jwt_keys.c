/*-------------------------------------------------------------------------
 *
 * jwt_keys.c
 *	  The JWT key table bv.jwt_keys, the revocation list, their per-backend
 *	  cache, and the tables' triggers.  (Loading a key and the signature
 *	  primitives are in jwt_crypto.c.)
 *
 * Keys live in bv.jwt_keys (kid, alg, key as PEM or JWK, issuer, validity
 * window, active), writable by bv_admin only.  The key decides the
 * algorithm: a token's "alg" must equal its key's, so "none" and HS-with-an-
 * RSA-key confusion cannot happen.  A BEFORE trigger runs
 * bv._jwt_key_check() on every row written, so a weak or malformed key
 * (the rules are in jwt_crypto.c) never enters the table.  The trigger also
 * checks, before the table's constraints would, every column they check:
 * a constraint's error reports the whole row, secret included, to the
 * client and the log.  Its errors hide the statement and it runs with the
 * error context stack emptied, so that no context line (COPY's quotes the
 * input line) carries the secret either (issue #17).
 *
 * A jti is 1 to BV_JWT_KID_MAX bytes everywhere: bv.jwt_verify() refuses
 * any other, bv.jwt_revoke() cannot revoke one, and bv_jwt_jti_revoked()
 * counts one as revoked.
 *
 * Cache and concurrency.  Each backend keeps the usable keys, already
 * turned into OpenSSL objects, in JwtKeyContext (a child of
 * CacheMemoryContext).  A statement trigger on bv.jwt_keys and on
 * bv.jwt_revocations calls CacheInvalidateRelcache(): at commit every
 * backend receives the invalidation and its relcache callback marks the
 * cache stale, so rotation needs no restart and no polling; the writing
 * backend sees its own change at the next command, and a rolled-back
 * change is undone by the same mechanism.  The cache is rebuilt on the
 * next use by a plain heap scan under a fresh snapshot (no SPI, and no
 * privilege on the table is needed by the calling role: only the verdict
 * leaves this file).  The time window (not_before/expires_at) is evaluated
 * at each use, so keys also expire without an invalidation.
 *
 * A key that fails to load while the cache is built (possible only if it
 * was written with the triggers disabled) is skipped with a WARNING, so one
 * bad row cannot stop verification with the other keys.
 *
 * OpenSSL objects are malloc'ed by OpenSSL; a reset callback on
 * JwtKeyContext frees them and wipes secrets when the cache is rebuilt, so
 * nothing leaks whatever path resets the context.
 *
 * Errors here never include key material or token text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "bv_common.h"
#include "bv_core.h"
#include "jwt_parse.h"

/* Most keys kept per backend; a JWKS rarely holds more than a handful. */
#define MAX_KEYS 256

static MemoryContext JwtKeyContext = NULL;
static bool keys_valid = false;

/*
 * Invalidations seen so far.  A rebuild counts as valid only if none
 * arrived while it ran: it reads under a snapshot taken at its start, and
 * an invalidation processed later (when it opens a table, detoasts a key)
 * stands for a commit that snapshot may miss (red-team review: a revocation
 * or key deactivation committed during a rebuild was swallowed, and that
 * backend accepted the token until the next change to the tables).
 */
static uint64 keys_invalidations = 0;
static Oid keys_relid = InvalidOid;
static Oid revocations_relid = InvalidOid;
static BvJwtKey *keys = NULL;
static int nkeys_cached = 0;
static HTAB *revoked = NULL;

typedef struct RevokedEntry
{
	char jti[BV_JWT_KID_MAX + 1];
	bool has_expiry;
	TimestampTz expires_at;
} RevokedEntry;

static void
free_key_callback(void *arg)
{
	bv_jwt_key_free((BvJwtKey *) arg);
}

/*
 * bv_jwt_key_load() for the cache: a key that does not load (one written with the
 * table's triggers disabled, or refused by a newer OpenSSL) is skipped with
 * a WARNING instead of making every verification fail.  bv_jwt_key_load() takes no
 * locks or buffers and frees its OpenSSL objects before raising, so
 * flushing its error is safe.
 */
static bool
try_load_key(BvJwtKey *key, const char *text)
{
	MemoryContext ctx = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		bv_jwt_key_load(key, text);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(ctx);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("skipping key \"%s\" of bv.jwt_keys", bv_clip(key->kid)),
				 errdetail("%s", edata->detail ? edata->detail : edata->message),
				 errhint("Fix or deactivate the key; it was written without the checks of the table's triggers.")));
		FreeErrorData(edata);
		bv_jwt_key_free(key);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

static void
jwt_keys_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == keys_relid || relid == revocations_relid)
	{
		keys_valid = false;
		keys_invalidations++;
	}
}

/*
 * bv_jwt_keys_init
 *		Register the relcache callback (once per backend, from _PG_init).
 */
void
bv_jwt_keys_init(void)
{
	CacheRegisterRelcacheCallback(jwt_keys_invalidate, (Datum) 0);
}

static Oid
bv_table_oid(const char *name)
{
	Oid nsp = get_namespace_oid("bv", true);

	return OidIsValid(nsp) ? get_relname_relid(name, nsp) : InvalidOid;
}

static int
column_index(TupleDesc desc, const char *name)
{
	int i;

	for (i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped &&
			strcmp(NameStr(TupleDescAttr(desc, i)->attname), name) == 0)
			return i;
	elog(ERROR, "column \"%s\" is missing from a bv_core table", name);
	return -1; /* keep compiler quiet */
}

/* The column's index, or -1 when the table (an older version) lacks it. */
static int
column_index_optional(TupleDesc desc, const char *name)
{
	int i;

	for (i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped &&
			strcmp(NameStr(TupleDescAttr(desc, i)->attname), name) == 0)
			return i;
	return -1;
}

/*
 * The roles a key's tokens may name (bv.jwt_keys.roles, 0.4.0), copied
 * into the current memory context (JwtKeyContext).
 */
static void
load_roles(BvJwtKey *key, Datum value)
{
	ArrayType *arr = DatumGetArrayTypeP(value);
	Datum *elems;
	bool *elemnulls;
	int n, i;

	deconstruct_array(arr, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR, &elems, &elemnulls, &n);
	key->roles = palloc(sizeof(char *) * Max(n, 1));
	key->nroles = 0;
	for (i = 0; i < n; i++)
		if (!elemnulls[i])
			key->roles[key->nroles++] = pstrdup(NameStr(*DatumGetName(elems[i])));
}

static char *
text_column(Datum *values, bool *nulls, int i)
{
	return nulls[i] ? NULL : TextDatumGetCString(values[i]);
}

/* Read the active keys and live revocations into JwtKeyContext. */
static void
reload_cache(void)
{
	Relation rel;
	TableScanDesc scan;
	HeapTuple tuple;
	Snapshot snapshot;
	MemoryContext old;
	TupleDesc desc;
	uint64 invalidations_at_start = keys_invalidations;
	int c_kid,
		c_alg,
		c_key,
		c_iss,
		c_nbf,
		c_exp,
		c_active,
		c_roles;

	if (JwtKeyContext == NULL)
		JwtKeyContext = AllocSetContextCreate(CacheMemoryContext, "bv jwt keys",
											  ALLOCSET_SMALL_SIZES);
	MemoryContextReset(JwtKeyContext);
	keys = NULL;
	nkeys_cached = 0;
	revoked = NULL;

	keys_relid = bv_table_oid("jwt_keys");
	revocations_relid = bv_table_oid("jwt_revocations");
	if (!OidIsValid(keys_relid) || !OidIsValid(revocations_relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("bv_core 0.2.0 is not installed in this database"),
				 errdetail("The tables bv.jwt_keys and bv.jwt_revocations do not exist."),
				 errhint("Run ALTER EXTENSION bv_core UPDATE.")));

	old = MemoryContextSwitchTo(JwtKeyContext);
	keys = palloc0(sizeof(BvJwtKey) * MAX_KEYS);

	snapshot = RegisterSnapshot(GetLatestSnapshot());
	rel = table_open(keys_relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	c_kid = column_index(desc, "kid");
	c_alg = column_index(desc, "alg");
	c_key = column_index(desc, "key");
	c_iss = column_index(desc, "issuer");
	c_nbf = column_index(desc, "not_before");
	c_exp = column_index(desc, "expires_at");
	c_active = column_index(desc, "active");
	c_roles = column_index_optional(desc, "roles");
	scan = table_beginscan(rel, snapshot, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Datum *values = palloc(sizeof(Datum) * desc->natts);
		bool *nulls = palloc(sizeof(bool) * desc->natts);
		BvJwtKey *key;
		MemoryContextCallback *cb;

		heap_deform_tuple(tuple, desc, values, nulls);
		if (nulls[c_active] || !DatumGetBool(values[c_active]))
			continue;
		if (nkeys_cached >= MAX_KEYS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many active keys in bv.jwt_keys"),
					 errdetail("At most %d keys can be active at once.", MAX_KEYS),
					 errhint("Deactivate keys that are no longer used (active = false).")));
		key = &keys[nkeys_cached];
		memset(key, 0, sizeof(*key));
		key->kid = text_column(values, nulls, c_kid);
		key->alg = bv_jwt_alg_from_name(text_column(values, nulls, c_alg));
		key->issuer = text_column(values, nulls, c_iss);
		key->has_not_before = !nulls[c_nbf];
		key->not_before = nulls[c_nbf] ? 0 : DatumGetTimestampTz(values[c_nbf]);
		key->has_expires_at = !nulls[c_exp];
		key->expires_at = nulls[c_exp] ? 0 : DatumGetTimestampTz(values[c_exp]);
		if (c_roles >= 0 && !nulls[c_roles])
			load_roles(key, values[c_roles]);
		cb = palloc(sizeof(MemoryContextCallback));
		cb->func = free_key_callback;
		cb->arg = key;
		MemoryContextRegisterResetCallback(JwtKeyContext, cb);
		if (try_load_key(key, text_column(values, nulls, c_key)))
			nkeys_cached++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	/* the revocation list: jti values not yet past their expiry */
	{
		HASHCTL ctl;
		int c_jti,
			c_rexp;

		ctl.keysize = BV_JWT_KID_MAX + 1;
		ctl.entrysize = sizeof(RevokedEntry);
		ctl.hcxt = JwtKeyContext;
		revoked = hash_create("bv revoked jti", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		rel = table_open(revocations_relid, AccessShareLock);
		desc = RelationGetDescr(rel);
		c_jti = column_index(desc, "jti");
		c_rexp = column_index(desc, "expires_at");
		scan = table_beginscan(rel, snapshot, 0, NULL);
		while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
		{
			Datum values[8];
			bool nulls[8];
			char *jti;
			RevokedEntry *e;

			if (desc->natts > 8)
				elog(ERROR, "unexpected shape of bv.jwt_revocations");
			heap_deform_tuple(tuple, desc, values, nulls);
			jti = text_column(values, nulls, c_jti);
			if (jti == NULL || strlen(jti) > BV_JWT_KID_MAX)
				continue;
			e = hash_search(revoked, jti, HASH_ENTER, NULL);
			e->has_expiry = !nulls[c_rexp];
			e->expires_at = nulls[c_rexp] ? 0 : DatumGetTimestampTz(values[c_rexp]);
		}
		table_endscan(scan);
		table_close(rel, AccessShareLock);
	}
	UnregisterSnapshot(snapshot);
	MemoryContextSwitchTo(old);
	/* an invalidation during the rebuild: rebuild again at the next use */
	keys_valid = (keys_invalidations == invalidations_at_start);
}

static inline void
ensure_cache(void)
{
	if (!keys_valid)
		reload_cache();
}

/*
 * bv_jwt_key_next
 *		The next key, from *pos on, that a token with this alg (and kid, if
 *		not NULL) may be verified with at time now: same algorithm, active,
 *		inside its validity window; NULL when there is none left.  Start with
 *		*pos = 0.  The key belongs to the cache: it stays valid until the
 *		next invalidation is processed (so for the current call, which takes
 *		no lock in between).  Allocates nothing.
 */
BvJwtKey *
bv_jwt_key_next(BvJwtAlg alg, const char *kid, TimestampTz now, int *pos)
{
	if (*pos == 0)
		ensure_cache();
	while (*pos < nkeys_cached)
	{
		BvJwtKey *k = &keys[(*pos)++];

		if (k->alg != alg)
			continue;
		if (kid != NULL && strcmp(k->kid, kid) != 0)
			continue;
		if (k->has_not_before && now < k->not_before)
			continue;
		if (k->has_expires_at && now >= k->expires_at)
			continue;
		return k;
	}
	return NULL;
}

/*
 * bv_jwt_key_for_signing
 *		The active, currently valid key kid if it can sign, else raise.
 */
BvJwtKey *
bv_jwt_key_for_signing(const char *kid)
{
	TimestampTz now = GetCurrentTimestamp();
	int i;

	ensure_cache();
	for (i = 0; i < nkeys_cached; i++)
	{
		BvJwtKey *k = &keys[i];

		if (strcmp(k->kid, kid) != 0)
			continue;
		if ((k->has_not_before && now < k->not_before) ||
			(k->has_expires_at && now >= k->expires_at))
			break;
		if (!k->can_sign)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("key \"%s\" cannot sign", bv_clip(kid)),
					 errdetail("Only its public half is stored."),
					 errhint("Store the PEM private key to sign with it, or sign with an HS key.")));
		return k;
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("no usable key \"%s\" in bv.jwt_keys", bv_clip(kid)),
			 errdetail("The key does not exist, is inactive, or is outside its validity window."),
			 errhint("List the keys with SELECT kid, alg, active, not_before, expires_at FROM bv.jwt_keys.")));
	return NULL; /* keep compiler quiet */
}

/*
 * bv_jwt_jti_revoked
 *		Is this jti on the (unexpired part of the) revocation list?  An
 *		entry is unexpired until expires_at + bv.jwt_leeway.  A jti
 *		that bv.jwt_revoke() could not revoke (empty, or over BV_JWT_KID_MAX
 *		bytes: one rule, in bytes, on both sides) counts as revoked, so
 *		that no token is unrevocable on any entry point (bv.jwt_verify()
 *		refuses such a jti as malformed before asking).
 */
bool
bv_jwt_jti_revoked(const char *jti)
{
	RevokedEntry *e;
	TimestampTz until;

	if (jti[0] == '\0' || strlen(jti) > BV_JWT_KID_MAX)
		return true;
	ensure_cache();
	if (hash_get_num_entries(revoked) == 0)
		return false;
	e = hash_search(revoked, jti, HASH_FIND, NULL);
	/*
	 * A revocation lasts until its expires_at plus bv.jwt_leeway (#17
	 * attack review): revoked "until the token's own exp", as documented, a
	 * token is still accepted for the leeway after its exp, and was
	 * accepted again in that window.
	 */
	if (e == NULL)
		return false;
	if (!e->has_expiry)
		return true;
	/*
	 * expires_at 'infinity' is "for ever", as NULL (red-team review: the
	 * sum overflowed, wrapped below now, and such a revocation had no
	 * effect); no sum may overflow either.
	 */
	if (TIMESTAMP_IS_NOEND(e->expires_at) ||
		pg_add_s64_overflow(e->expires_at, (TimestampTz) bv_jwt_leeway * USECS_PER_SEC, &until))
		return true;
	return GetCurrentTimestamp() < until;
}

PG_FUNCTION_INFO_V1(bv_jwt_key_check);

/*
 * A row of bv.jwt_keys that the trigger refuses: SQLSTATE code, a fixed
 * detail and hint, the kid only as a bounded prefix, never the key, and
 * neither the statement (it may hold the secret) nor a context line (COPY
 * would quote the row): the trigger runs with the error context stack
 * emptied (see bv_jwt_key_check).
 */
static void row_error(int code, const char *kid, const char *detail, const char *hint) pg_attribute_noreturn();

static void
row_error(int code, const char *kid, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(code),
			 errmsg("invalid key \"%s\" in bv.jwt_keys", kid ? bv_clip(kid) : "(null)"),
			 errdetail("%s", detail),
			 errhidestmt(true),
			 errhint("%s", hint)));
}

/* The value of column name in tuple, or isnull. */
static inline Datum
row_value(HeapTuple tuple, TupleDesc desc, const char *name, bool *isnull)
{
	return heap_getattr(tuple, column_index(desc, name) + 1, desc, isnull);
}

/*
 * Check every column that a constraint of bv.jwt_keys checks, before the
 * constraint does: a constraint's error would report the whole row,
 * secret included ("Failing row contains ..."), to the client and the log.
 * The rules here are at least as strict as the table's constraints.
 */
static void
check_key_row(HeapTuple tuple, TupleDesc desc, const char **kid_out)
{
	bool isnull;
	bool nbf_null;
	Datum d;
	Datum nbf;
	char *kid;
	char *source;

	d = row_value(tuple, desc, "kid", &isnull);
	if (isnull)
		row_error(ERRCODE_NULL_VALUE_NOT_ALLOWED, NULL, "The kid is NULL.",
				  "Give every key a kid of 1 to 256 bytes: tokens select their key by it.");
	kid = TextDatumGetCString(d);
	if (kid[0] == '\0' || strlen(kid) > BV_JWT_KID_MAX)
		row_error(ERRCODE_INVALID_PARAMETER_VALUE, kid,
				  psprintf("The kid has %zu bytes; 1 to %d are accepted.", strlen(kid), BV_JWT_KID_MAX),
				  "Give every key a kid of 1 to 256 bytes: tokens select their key by it.");
	*kid_out = kid;

	(void) row_value(tuple, desc, "alg", &isnull);
	if (isnull)
		row_error(ERRCODE_NULL_VALUE_NOT_ALLOWED, kid, "The alg is NULL.",
				  "Name the key's algorithm: HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384 or EdDSA.");
	(void) row_value(tuple, desc, "key", &isnull);
	if (isnull)
		row_error(ERRCODE_NULL_VALUE_NOT_ALLOWED, kid, "The key is NULL.",
				  "Give the key as PEM or JWK, or an HS secret as text.");
	(void) row_value(tuple, desc, "active", &isnull);
	if (isnull)
		row_error(ERRCODE_NULL_VALUE_NOT_ALLOWED, kid, "active is NULL.",
				  "Set active to true or false.");
	(void) row_value(tuple, desc, "created_at", &isnull);
	if (isnull)
		row_error(ERRCODE_NULL_VALUE_NOT_ALLOWED, kid, "created_at is NULL.",
				  "Leave created_at to its default.");
	d = row_value(tuple, desc, "source", &isnull);
	if (isnull)
		row_error(ERRCODE_NULL_VALUE_NOT_ALLOWED, kid, "source is NULL.",
				  "Leave source to its default (manual); bv.jwt_import_jwks() sets jwks.");
	source = TextDatumGetCString(d);
	if (strcmp(source, "manual") != 0 && strcmp(source, "jwks") != 0)
		row_error(ERRCODE_INVALID_PARAMETER_VALUE, kid, "source must be manual or jwks.",
				  "Leave source to its default (manual); bv.jwt_import_jwks() sets jwks.");
	nbf = row_value(tuple, desc, "not_before", &nbf_null);
	d = row_value(tuple, desc, "expires_at", &isnull);
	if (!nbf_null && !isnull &&
		timestamptz_cmp_internal(DatumGetTimestampTz(d), DatumGetTimestampTz(nbf)) <= 0)
		row_error(ERRCODE_INVALID_PARAMETER_VALUE, kid, "expires_at is not after not_before.",
				  "Give the key a validity window whose end is after its start, or leave one end NULL.");
	/* roles (0.4.0): NULL, or a list of role names without NULLs */
	if (column_index_optional(desc, "roles") >= 0)
	{
		d = row_value(tuple, desc, "roles", &isnull);
		if (!isnull)
		{
			ArrayType *arr = DatumGetArrayTypeP(d);

			if (ARR_NDIM(arr) > 1 || array_contains_nulls(arr) ||
				ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)) > 64)
				row_error(ERRCODE_INVALID_PARAMETER_VALUE, kid,
						  "roles must be a one-dimensional list of at most 64 role names without NULLs.",
						  "List the API roles the key's tokens may name, e.g. '{bv_anon,bv_user}', or NULL for any.");
		}
	}
}

/*
 * Does this UPDATE leave the key's material and algorithm as they were and
 * the key inactive?  Then its strength is not checked again, so that a key
 * that an older version accepted and this one refuses can be deactivated.
 */
static bool
update_deactivates_only(TriggerData *trigdata, TupleDesc desc)
{
	HeapTuple oldt = trigdata->tg_trigtuple;
	HeapTuple newt = trigdata->tg_newtuple;
	bool n1,
		n2;
	Datum a,
		b;

	if (!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		return false;
	a = row_value(newt, desc, "active", &n1);
	if (n1 || DatumGetBool(a))
		return false;
	a = row_value(oldt, desc, "key", &n1);
	b = row_value(newt, desc, "key", &n2);
	if (n1 || n2 || strcmp(TextDatumGetCString(a), TextDatumGetCString(b)) != 0)
		return false;
	a = row_value(oldt, desc, "alg", &n1);
	b = row_value(newt, desc, "alg", &n2);
	return !n1 && !n2 && strcmp(TextDatumGetCString(a), TextDatumGetCString(b)) == 0;
}

/*
 * bv._jwt_key_check(): BEFORE INSERT OR UPDATE trigger on bv.jwt_keys that
 * refuses malformed and weak keys, and any row a constraint would refuse
 * (so that no constraint error quotes the row and its secret).
 */
Datum
bv_jwt_key_check(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple tuple;
	TupleDesc desc;
	bool isnull;
	Datum d;
	BvJwtKey *key;
	MemoryContext tmp;
	MemoryContext old;
	MemoryContextCallback *cb;
	ErrorContextCallback *saved_context = error_context_stack;
	const char *kid = NULL;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("bv._jwt_key_check() must be a BEFORE ROW trigger"),
				 errhint("It is installed on bv.jwt_keys by the extension; do not call it directly.")));
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple : trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);

	/*
	 * No error context while the row is checked: COPY's context callback
	 * would quote the input line, secret included.  Whoever catches an
	 * error restores the stack (PG_CATCH), so only the normal exit needs to.
	 */
	error_context_stack = NULL;

	/*
	 * OpenSSL objects made while checking are freed by a reset callback of
	 * a private context, also when bv_jwt_key_load() raises an error.
	 */
	tmp = AllocSetContextCreate(CurrentMemoryContext, "bv jwt key check", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(tmp);
	check_key_row(tuple, desc, &kid);
	if (!update_deactivates_only(trigdata, desc))
	{
		key = palloc0(sizeof(BvJwtKey));
		cb = palloc(sizeof(MemoryContextCallback));
		cb->func = free_key_callback;
		cb->arg = key;
		MemoryContextRegisterResetCallback(tmp, cb);
		key->kid = (char *) kid;
		d = row_value(tuple, desc, "alg", &isnull);
		key->alg = bv_jwt_alg_from_name(TextDatumGetCString(d));
		d = row_value(tuple, desc, "key", &isnull);
		bv_jwt_key_load(key, TextDatumGetCString(d));
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(tmp);
	error_context_stack = saved_context;
	return PointerGetDatum(tuple);
}

PG_FUNCTION_INFO_V1(bv_jwt_tables_changed);

/*
 * bv._jwt_tables_changed(): AFTER STATEMENT trigger on bv.jwt_keys and
 * bv.jwt_revocations: tell every backend to rebuild its cache.
 */
Datum
bv_jwt_tables_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("bv._jwt_tables_changed() must be called as a trigger"),
				 errhint("It is installed on bv.jwt_keys and bv.jwt_revocations by the extension.")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	keys_valid = false;
	keys_invalidations++;
	return PointerGetDatum(NULL);
}
