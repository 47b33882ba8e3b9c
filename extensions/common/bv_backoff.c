/*-------------------------------------------------------------------------
 *
 * bv_backoff.c
 *	  Exponential back-off with jitter, for workers that retry a peer.
 *
 * A worker that lost its broker, its replication stream or its HTTP peer
 * waits before retrying: base * 2^attempt, capped, with "equal jitter" (half
 * the delay fixed, half random) so that many workers do not retry in step,
 * while the wait still grows.  The state is a small struct the caller owns;
 * a success resets it.  The random numbers come from pg_global_prng_state,
 * which the postmaster seeds per process.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"

#include "bv_common.h"

void
bv_backoff_init(BvBackoff *b, int base_ms, int max_ms)
{
	b->base_ms = Max(base_ms, 1);
	b->max_ms = Max(max_ms, b->base_ms);
	b->attempt = 0;
}

/*
 * bv_backoff_next
 *		The delay before the next retry, in milliseconds; each call doubles
 *		the ceiling until max_ms.
 */
int
bv_backoff_next(BvBackoff *b)
{
	int64 ceiling = (int64) b->base_ms << Min(b->attempt, 20);
	int64 half;

	ceiling = Min(ceiling, (int64) b->max_ms);
	half = ceiling / 2;
	if (b->attempt < 30)
		b->attempt++;
	return (int) (half + (int64) pg_prng_uint64_range(&pg_global_prng_state, 0, (uint64) (ceiling - half)));
}

void
bv_backoff_reset(BvBackoff *b)
{
	b->attempt = 0;
}
