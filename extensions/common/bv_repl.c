/*-------------------------------------------------------------------------
 *
 * bv_repl.c
 *	  A libpq client of the streaming replication protocol, for workers.
 *
 * Background workers that stream a logical replication slot (bv_cdc, and
 * any later part that does the same) talk to their own server the way
 * pg_recvlogical does: a "replication=database" connection, replication
 * commands (CREATE_REPLICATION_SLOT, START_REPLICATION ... LOGICAL), then
 * CopyBoth messages: XLogData ('w') and keepalives ('k') from the server,
 * standby status updates ('r') from us.  This file wraps those steps so
 * that callers deal only in LSNs and payloads.
 *
 * Concurrency: a connection belongs to one process and is used by it alone.
 * Every wait here is on the process latch and the connection's socket, with
 * WL_EXIT_ON_PM_DEATH, so a caller stays responsive to SIGTERM (through
 * CHECK_FOR_INTERRUPTS) and to postmaster death.  Nothing here throws for a
 * connection problem: functions return false and a palloc'd message in
 * *err, so that the caller can back off and retry.
 *
 * Memory: messages and results are allocated in CurrentMemoryContext;
 * libpq's own buffers (PQgetCopyData) are freed with PQfreemem by the caller
 * through bv_repl_free().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "libpq-fe.h"

#include "bv_common.h"

static char *
conn_error(PGconn *conn)
{
	char *msg = pstrdup(conn ? PQerrorMessage(conn) : "out of memory");
	int len = strlen(msg);

	/* libpq messages end with a newline; ours do not. */
	while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
		msg[--len] = '\0';
	return msg;
}

/*
 * bv_repl_connect
 *		Open a replication connection described by conninfo (which must hold
 *		"replication=database" or the caller's equivalent), waiting on the
 *		latch so that interrupts are served.  NULL and *err on failure.
 */
PGconn *
bv_repl_connect(const char *conninfo, uint32 wait_event, char **err)
{
	const char *keys[] = {"dbname", NULL};
	const char *vals[] = {conninfo, NULL};
	PGconn *conn = PQconnectStartParams(keys, vals, true);
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;

	if (conn == NULL || PQstatus(conn) == CONNECTION_BAD)
	{
		*err = conn_error(conn);
		if (conn)
			PQfinish(conn);
		return NULL;
	}

	while (status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED)
	{
		int events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | WL_TIMEOUT;
		int rc;

		events |= status == PGRES_POLLING_READING ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE;
		rc = WaitLatchOrSocket(MyLatch, events, PQsocket(conn), 1000, wait_event);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		status = PQconnectPoll(conn);
	}

	if (status == PGRES_POLLING_FAILED || PQstatus(conn) != CONNECTION_OK)
	{
		*err = conn_error(conn);
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/*
 * bv_repl_command
 *		Run one replication command and wait for its result (on the latch).
 *		Returns the PGresult (caller PQclear()s it) when its status is
 *		"expect"; otherwise NULL with *err and, when the server sent one, the
 *		SQLSTATE in *sqlstate (a palloc'd string, or NULL).
 */
PGresult *
bv_repl_command(PGconn *conn, const char *command, ExecStatusType expect, uint32 wait_event,
				char **err, char **sqlstate)
{
	PGresult *res = NULL;
	PGresult *last = NULL;

	if (sqlstate)
		*sqlstate = NULL;
	if (!PQsendQuery(conn, command))
	{
		*err = conn_error(conn);
		return NULL;
	}
	for (;;)
	{
		while (PQisBusy(conn))
		{
			int rc = WaitLatchOrSocket(MyLatch,
									   WL_LATCH_SET | WL_SOCKET_READABLE | WL_EXIT_ON_PM_DEATH,
									   PQsocket(conn), -1, wait_event);

			if (rc & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
			if (!PQconsumeInput(conn))
			{
				*err = conn_error(conn);
				if (last)
					PQclear(last);
				return NULL;
			}
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		if (last)
			PQclear(last);
		last = res;
		/* START_REPLICATION ends its results with COPY BOTH. */
		if (PQresultStatus(res) == PGRES_COPY_BOTH)
			break;
	}

	if (last == NULL || PQresultStatus(last) != expect)
	{
		const char *state = last ? PQresultErrorField(last, PG_DIAG_SQLSTATE) : NULL;

		*err = last && PQresultErrorMessage(last)[0] ? pstrdup(PQresultErrorMessage(last))
													 : conn_error(conn);
		if (sqlstate && state)
			*sqlstate = pstrdup(state);
		if (last)
			PQclear(last);
		/* Trim the trailing newline of server messages. */
		while (strlen(*err) > 0 && (*err)[strlen(*err) - 1] == '\n')
			(*err)[strlen(*err) - 1] = '\0';
		return NULL;
	}
	return last;
}

/*
 * bv_repl_receive
 *		The next CopyData message, without blocking.  Returns its length
 *		(> 0) with the buffer in *buf (free it with bv_repl_free), 0 when
 *		nothing is available yet (wait for the socket), -1 when the stream
 *		ended or failed (then *err says why).
 */
int
bv_repl_receive(PGconn *conn, char **buf, char **err)
{
	int len;

	*buf = NULL;
	len = PQgetCopyData(conn, buf, 1);
	if (len == 0)
	{
		if (!PQconsumeInput(conn))
		{
			*err = conn_error(conn);
			return -1;
		}
		len = PQgetCopyData(conn, buf, 1);
	}
	if (len == -1)
	{
		PGresult *res = PQgetResult(conn);

		*err = res && PQresultErrorMessage(res)[0] ? pstrdup(PQresultErrorMessage(res))
												   : pstrdup("the server ended the replication stream");
		if (res)
			PQclear(res);
		return -1;
	}
	if (len == -2)
	{
		*err = conn_error(conn);
		return -1;
	}
	return len;
}

void
bv_repl_free(char *buf)
{
	if (buf)
		PQfreemem(buf);
}

static uint64
get_u64(const char *p)
{
	uint64 v;

	memcpy(&v, p, sizeof(v));
	return pg_ntoh64(v);
}

static void
put_u64(char *p, uint64 v)
{
	v = pg_hton64(v);
	memcpy(p, &v, sizeof(v));
}

/*
 * bv_repl_parse
 *		Decode one message of the stream: XLogData ('w': *start is the LSN
 *		of the data, *data and *datalen its payload) or keepalive ('k': *walend
 *		is the server's position, *reply whether it asks for an answer).
 *		Returns the message type, or 0 when the message is malformed.
 */
char
bv_repl_parse(const char *buf, int len, XLogRecPtr *start, XLogRecPtr *walend, bool *reply,
			  const char **data, int *datalen)
{
	if (len < 1)
		return 0;
	switch (buf[0])
	{
		case 'w':
			/* 'w' dataStart walEnd sendTime data */
			if (len < 1 + 24)
				return 0;
			*start = get_u64(buf + 1);
			*walend = get_u64(buf + 9);
			*data = buf + 25;
			*datalen = len - 25;
			return 'w';
		case 'k':
			/* 'k' walEnd sendTime replyRequested */
			if (len < 1 + 17)
				return 0;
			*walend = get_u64(buf + 1);
			*reply = buf[17] != 0;
			return 'k';
		default:
			return 0;
	}
}

/*
 * bv_repl_send_status
 *		Send a standby status update: written (received) and flushed
 *		(durably handled) positions; the flushed one is what the server
 *		records as the slot's confirmed_flush_lsn.  "reply" asks the server
 *		for an immediate keepalive.
 */
bool
bv_repl_send_status(PGconn *conn, XLogRecPtr written, XLogRecPtr flushed, bool reply, char **err)
{
	char msg[1 + 8 + 8 + 8 + 8 + 1];

	msg[0] = 'r';
	put_u64(msg + 1, written);
	put_u64(msg + 9, flushed);
	put_u64(msg + 17, flushed); /* applied = flushed */
	put_u64(msg + 25, (uint64) GetCurrentTimestamp());
	msg[33] = reply ? 1 : 0;
	if (PQputCopyData(conn, msg, sizeof(msg)) <= 0 || PQflush(conn) < 0)
	{
		*err = conn_error(conn);
		return false;
	}
	return true;
}
