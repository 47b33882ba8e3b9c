/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  Token-bucket rate limiting in shared memory: bv.rate_limit(),
 *	  bv.rate_limit_enforce(), bv.rate_limit_retry_after().
 *
 * Buckets are keyed by text (for example "user:<sub>" or "apikey:<id>") and
 * live in a fixed-size table in shared memory, so that every backend sees
 * the same buckets and a call costs no table I/O.  Being outside the
 * transaction system, a call works in READ ONLY transactions (PostgREST
 * GETs), on standbys, and keeps its effect if the transaction rolls back
 * (a refused request cannot retry itself into extra tokens).
 *
 * Layout and locking.  The table has bv.rate_limit_buckets slots (a
 * PGC_POSTMASTER setting), split into RL_PARTITIONS partitions, each
 * protected by its own LWLock from the named tranche "bv_ratelimit".  A key
 * hashes to one partition and to a home slot in it; it may sit in any of the
 * RL_PROBE slots from its home (wrapping inside the partition).  A call
 * takes only its partition's lock, exclusively, for a few hundred
 * instructions, and never takes two locks, so there is no deadlock and
 * little contention with 64 partitions.
 *
 * Eviction.  A new key takes, in order: a free slot of its window, an idle
 * one (a bucket that has refilled to its burst, which is indistinguishable
 * from a new bucket, so evicting it changes nothing), or else the least
 * recently used rate-limit slot; the last case loses state and is counted
 * in bv.rate_limit_stats() as evicted_active: if it grows, raise
 * bv.rate_limit_buckets.
 *
 * Replay entries (bv.jwt_replay_check, issue #17).  The jti of a verified
 * token is a pinned bucket of burst 1 that refills exactly when the token
 * expires: until then it is never evicted, since forgetting it would let
 * the token be used again.  Pinned and rate-limit buckets live in separate
 * key spaces (a rate-limit key never matches a replay entry), and a
 * rate-limit key never evicts an unexpired replay entry.  When every slot
 * of a new jti's window holds an unexpired replay entry, the table is full
 * for it: bv_replay_take() says so and bv.jwt_verify() refuses the token
 * with 53400 (fail closed), counted as replay_refused in
 * bv.jwt_replay_stats(); a rate-limit key in the same situation is allowed
 * without a bucket and counted as untracked in the same function.
 *
 * Time is GetCurrentTimestamp() (wall clock, not transaction start), so a
 * long statement does not freeze its buckets; a clock step backwards is
 * ignored (a bucket never refills for negative time).
 *
 * Shared memory is requested in shmem_request_hook and set up in
 * shmem_startup_hook under AddinShmemInitLock (bv_core.c chains the hooks);
 * without shared_preload_libraries the functions raise 55000.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "bv_common.h"
#include "bv_core.h"

#define RL_PARTITIONS 64
#define RL_PROBE      8
#define RL_KEY_MAX    96 /* longer keys are replaced by their SHA-256 */

typedef struct RlBucket
{
	uint32 hash;
	uint16 keylen; /* 0: free slot */
	bool pinned;   /* a replay entry: kept until it has refilled */
	double tokens;
	double rate;
	double burst;
	TimestampTz last;
	char key[RL_KEY_MAX];
} RlBucket;

typedef struct RlPartition
{
	uint64 allowed;
	uint64 denied;
	uint64 evicted_idle;
	uint64 evicted_active;
	uint64 replay_refused; /* new jtis refused: window full of replay entries */
	uint64 untracked;      /* rate-limit keys allowed without a slot, likewise */
} RlPartition;

typedef struct RlShared
{
	int per_partition;
	LWLockPadded *locks;
	RlPartition parts[RL_PARTITIONS];
	RlBucket buckets[FLEXIBLE_ARRAY_MEMBER];
} RlShared;

static RlShared *rl = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static int
per_partition(void)
{
	return Max(bv_rate_limit_buckets / RL_PARTITIONS, RL_PROBE);
}

static Size
rl_shmem_size(void)
{
	return add_size(offsetof(RlShared, buckets),
					mul_size(sizeof(RlBucket), mul_size(RL_PARTITIONS, per_partition())));
}

static void
rl_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(rl_shmem_size());
	RequestNamedLWLockTranche("bv_ratelimit", RL_PARTITIONS);
}

static void
rl_shmem_startup(void)
{
	bool found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rl = ShmemInitStruct("bv_ratelimit", rl_shmem_size(), &found);
	if (!found)
	{
		memset(rl, 0, rl_shmem_size());
		rl->per_partition = per_partition();
	}
	rl->locks = GetNamedLWLockTranche("bv_ratelimit");
	LWLockRelease(AddinShmemInitLock);
}

/*
 * bv_ratelimit_init
 *		Install the shared-memory hooks; called from _PG_init only while
 *		shared_preload_libraries is being processed.
 */
void
bv_ratelimit_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rl_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rl_shmem_startup;
}

bool
bv_ratelimit_available(void)
{
	return rl != NULL;
}

static inline void
CheckRateLimiterLoaded(void)
{
	if (rl == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the bv_core rate limiter is not available"),
				 errdetail("Its buckets live in shared memory, which bv_core can only reserve when the server starts."),
				 errhint("Add bv_core to shared_preload_libraries and restart the server.")));
}

/* Tokens of bucket b at time now (without changing it). */
static inline double
refilled(const RlBucket *b, TimestampTz now)
{
	double elapsed = now > b->last ? (double) (now - b->last) / USECS_PER_SEC : 0.0;

	return Min(b->burst, b->tokens + elapsed * b->rate);
}

/* What take_token() did. */
typedef enum RlResult
{
	RL_ALLOWED,
	RL_DENIED,
	RL_NO_SLOT /* no slot could be given to a new key */
} RlResult;

/*
 * Take one token from bucket key of kind pinned (rate tokens/s, at most
 * burst); see the file header for how a new key finds a slot.
 */
static RlResult
take_token(const char *key, size_t keylen, double rate, double burst,
		   bool pinned, double *retry_after)
{
	uint8 digest[BV_SHA256_LEN + 1];
	uint32 h;
	int part;
	int per;
	int home;
	int i;
	RlBucket *slots;
	RlBucket *b = NULL;
	RlPartition *stats;
	TimestampTz now;
	RlResult result;

	CheckRateLimiterLoaded();
	if (keylen > RL_KEY_MAX)
	{
		digest[0] = '#';
		if (!bv_sha256((const uint8 *) key, keylen, digest + 1))
			elog(ERROR, "could not hash a rate-limit key");
		key = (const char *) digest;
		keylen = sizeof(digest);
	}
	h = hash_bytes((const unsigned char *) key, (int) keylen);
	per = rl->per_partition;
	part = h % RL_PARTITIONS;
	home = (h / RL_PARTITIONS) % per;
	slots = &rl->buckets[part * per];
	stats = &rl->parts[part];
	*retry_after = 0;

	LWLockAcquire(&rl->locks[part].lock, LW_EXCLUSIVE);
	now = GetCurrentTimestamp();
	for (i = 0; i < RL_PROBE; i++)
	{
		RlBucket *s = &slots[(home + i) % per];

		if (s->keylen == keylen && s->hash == h && s->pinned == pinned &&
			memcmp(s->key, key, keylen) == 0)
		{
			b = s;
			break;
		}
	}
	if (b == NULL)
	{
		RlBucket *idle = NULL;
		RlBucket *oldest = NULL;

		for (i = 0; i < RL_PROBE; i++)
		{
			RlBucket *s = &slots[(home + i) % per];

			if (s->keylen == 0)
			{
				b = s;
				break;
			}
			if (idle == NULL && refilled(s, now) >= s->burst)
				idle = s;
			/* an unexpired replay entry is never evicted */
			if (!s->pinned && (oldest == NULL || s->last < oldest->last))
				oldest = s;
		}
		if (b == NULL && idle != NULL)
		{
			b = idle;
			stats->evicted_idle++;
		}
		else if (b == NULL && oldest != NULL)
		{
			/* a rate-limit bucket (a replay entry may take it, too) */
			b = oldest;
			stats->evicted_active++;
		}
		if (b == NULL)
		{
			if (pinned)
				stats->replay_refused++;
			else
				stats->untracked++;
			LWLockRelease(&rl->locks[part].lock);
			return RL_NO_SLOT;
		}
		b->hash = h;
		b->keylen = (uint16) keylen;
		b->pinned = pinned;
		memcpy(b->key, key, keylen);
		b->tokens = burst;
		b->last = now;
	}
	b->rate = rate;
	b->burst = burst;
	b->tokens = refilled(b, now);
	if (now > b->last)
		b->last = now;
	if (b->tokens >= 1.0)
	{
		b->tokens -= 1.0;
		result = RL_ALLOWED;
		stats->allowed++;
	}
	else
	{
		result = RL_DENIED;
		stats->denied++;
		*retry_after = (1.0 - b->tokens) / rate;
	}
	LWLockRelease(&rl->locks[part].lock);
	return result;
}

/*
 * bv_ratelimit_take
 *		Take one token from bucket key (rate tokens/s, at most burst).
 *		Returns true if allowed; else false with *retry_after the seconds
 *		until a token is available.  A key that finds no slot (its window
 *		full of unexpired replay entries) is allowed, untracked.
 */
bool
bv_ratelimit_take(const char *key, size_t keylen, double rate, double burst,
				  double *retry_after)
{
	return take_token(key, keylen, rate, burst, false, retry_after) != RL_DENIED;
}

/*
 * bv_replay_take
 *		Record one use of jti, which stays recorded for lifetime seconds.
 *		BV_REPLAY_FIRST for its first use, BV_REPLAY_AGAIN for a replay, and
 *		BV_REPLAY_FULL when no slot is free for a new jti (the caller must
 *		refuse the token: an entry is never forgotten before it expires).
 */
BvReplayResult
bv_replay_take(const char *jti, size_t len, double lifetime)
{
	double retry;

	/* a second of margin: the entry must outlive the token, not equal it */
	switch (take_token(jti, len, 1.0 / (Max(lifetime, 1.0) + 1.0), 1.0, true, &retry))
	{
		case RL_ALLOWED:
			return BV_REPLAY_FIRST;
		case RL_DENIED:
			return BV_REPLAY_AGAIN;
		default:
			return BV_REPLAY_FULL;
	}
}

/* Validate the SQL arguments; return the key. */
static text *
rate_limit_args(FunctionCallInfo fcinfo, double *rate, double *burst)
{
	text *key;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("rate limit key, rate and burst must not be null"),
				 errdetail("A NULL would silently skip the limit."),
				 errhint("Use a key such as 'user:' || bv.current_user_id(), and check that it is not NULL for anonymous requests.")));
	key = PG_GETARG_TEXT_PP(0);
	*rate = PG_GETARG_FLOAT8(1);
	*burst = PG_GETARG_FLOAT8(2);
	if (VARSIZE_ANY_EXHDR(key) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rate limit key must not be empty"),
				 errdetail("Each key names one bucket."),
				 errhint("Use a key such as 'user:' || bv.current_user_id().")));
	if (!(isfinite(*rate) && *rate > 0) || !(isfinite(*burst) && *burst >= 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid rate limit: rate %g per second, burst %g", *rate, *burst),
				 errdetail("The rate must be a positive finite number and the burst at least 1."),
				 errhint("For 100 requests per minute with bursts of 20, pass rate 100.0/60 and burst 20.")));
	return key;
}

/*
 * Key spaces of rate-limit buckets (#17 attack review).  bv.pre_request()'s
 * buckets (sub:<sub>, apikey:<id>, anon:<client>, route:...) must not be
 * reachable through the public functions: bv_service may call
 * bv.rate_limit() with any key, and 'sub:alice' would have drained Alice's
 * request bucket, 'route:/rpc/payment_webhook|authenticated' the payment
 * provider's.  Every key is stored with a one-byte prefix: 'u' for the
 * public functions, 'r' for bv._request_bucket(), which only the request
 * admission functions (SECURITY DEFINER, owned by the superuser) can call.
 */
static bool
take_in_space(char space, text *key, double rate, double burst, double *retry)
{
	size_t len = VARSIZE_ANY_EXHDR(key);
	char *buf = palloc(len + 1);
	bool ok;

	buf[0] = space;
	memcpy(buf + 1, VARDATA_ANY(key), len);
	ok = bv_ratelimit_take(buf, len + 1, rate, burst, retry);
	pfree(buf);
	return ok;
}

PG_FUNCTION_INFO_V1(bv_rate_limit);

/*
 * bv.rate_limit(key, rate, burst) returns boolean: take a token if one is
 * available.
 */
Datum
bv_rate_limit(PG_FUNCTION_ARGS)
{
	double rate,
		burst,
		retry;
	text *key = rate_limit_args(fcinfo, &rate, &burst);

	PG_RETURN_BOOL(take_in_space('u', key, rate, burst, &retry));
}

PG_FUNCTION_INFO_V1(bv_rate_limit_retry_after);

/*
 * bv.rate_limit_retry_after(key, rate, burst) returns float8: take a token;
 * 0 when allowed, else the seconds until one is available.
 */
Datum
bv_rate_limit_retry_after(PG_FUNCTION_ARGS)
{
	double rate,
		burst,
		retry;
	text *key = rate_limit_args(fcinfo, &rate, &burst);

	take_in_space('u', key, rate, burst, &retry);
	PG_RETURN_FLOAT8(retry);
}

PG_FUNCTION_INFO_V1(bv_request_bucket);

/*
 * bv._request_bucket(bucket, rate, burst) returns float8: as
 * bv.rate_limit_retry_after(), in the key space of the request admission
 * buckets, which the public functions cannot reach.
 */
Datum
bv_request_bucket(PG_FUNCTION_ARGS)
{
	double rate,
		burst,
		retry;
	text *key = rate_limit_args(fcinfo, &rate, &burst);

	take_in_space('r', key, rate, burst, &retry);
	PG_RETURN_FLOAT8(retry);
}

PG_FUNCTION_INFO_V1(bv_rate_limit_enforce);

/*
 * bv.rate_limit_enforce(key, rate, burst): take a token or raise PT429
 * (PostgREST turns it into HTTP 429).
 */
Datum
bv_rate_limit_enforce(PG_FUNCTION_ARGS)
{
	double rate,
		burst,
		retry;
	text *key = rate_limit_args(fcinfo, &rate, &burst);

	if (!take_in_space('u', key, rate, burst, &retry))
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE('P', 'T', '4', '2', '9')),
				 errmsg("rate limit exceeded"),
				 errdetail("Retry after %d seconds.", (int) ceil(retry)),
				 errhint("Slow down: wait before sending more requests.")));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(bv_rate_limit_stats);

/*
 * bv.rate_limit_stats(): slots in use and counters since start-up.
 */
Datum
bv_rate_limit_stats(PG_FUNCTION_ARGS)
{
	TupleDesc desc;
	Datum values[6];
	bool nulls[6] = {0};
	uint64 sums[4] = {0};
	int64 used = 0;
	int p,
		i;

	CheckRateLimiterLoaded();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	for (p = 0; p < RL_PARTITIONS; p++)
	{
		LWLockAcquire(&rl->locks[p].lock, LW_SHARED);
		for (i = 0; i < rl->per_partition; i++)
			if (rl->buckets[p * rl->per_partition + i].keylen != 0)
				used++;
		sums[0] += rl->parts[p].allowed;
		sums[1] += rl->parts[p].denied;
		sums[2] += rl->parts[p].evicted_idle;
		sums[3] += rl->parts[p].evicted_active;
		LWLockRelease(&rl->locks[p].lock);
	}
	values[0] = Int64GetDatum((int64) RL_PARTITIONS * rl->per_partition);
	values[1] = Int64GetDatum(used);
	for (i = 0; i < 4; i++)
		values[2 + i] = Int64GetDatum((int64) sums[i]);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(bv_jwt_replay_stats);

/*
 * bv.jwt_replay_stats(): the pressure on the replay table (issue #17):
 * slots of the shared table, unexpired replay entries in it, new jtis
 * refused because their window was full of them, and rate-limit keys that
 * found no slot for the same reason.
 */
Datum
bv_jwt_replay_stats(PG_FUNCTION_ARGS)
{
	TupleDesc desc;
	Datum values[4];
	bool nulls[4] = {0};
	int64 entries = 0;
	uint64 refused = 0;
	uint64 untracked = 0;
	TimestampTz now = GetCurrentTimestamp();
	int p,
		i;

	CheckRateLimiterLoaded();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	for (p = 0; p < RL_PARTITIONS; p++)
	{
		LWLockAcquire(&rl->locks[p].lock, LW_SHARED);
		for (i = 0; i < rl->per_partition; i++)
		{
			const RlBucket *b = &rl->buckets[p * rl->per_partition + i];

			if (b->keylen != 0 && b->pinned && refilled(b, now) < b->burst)
				entries++;
		}
		refused += rl->parts[p].replay_refused;
		untracked += rl->parts[p].untracked;
		LWLockRelease(&rl->locks[p].lock);
	}
	values[0] = Int64GetDatum((int64) RL_PARTITIONS * rl->per_partition);
	values[1] = Int64GetDatum(entries);
	values[2] = Int64GetDatum((int64) refused);
	values[3] = Int64GetDatum((int64) untracked);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
