/*-------------------------------------------------------------------------
 *
 * brokerauth.c
 *	  Keeps the broker's password and ACL files equal to the registry: the
 *	  bridge worker writes them after each change and signals the broker.
 *
 * mosquitto 2.0 checks device credentials itself, from files it reads at
 * start and on SIGHUP; on SIGHUP it also checks every connected client's
 * credentials again and disconnects those no longer valid (a disabled or
 * deleted device, an old secret), and it looks up ACLs per message.  So
 * provisioning, disabling, deleting, rotating a secret or changing a
 * certificate reaches the broker when these files are rewritten and the
 * broker is signalled.
 *
 * Change detection: statement triggers on iot.devices and
 * iot.device_certificates increment iot.broker_auth_changes.generation in
 * the changing transaction.  Every IOT_AUTH_POLL_MS the bridge (outside
 * its batches) reads the generation; when it differs from the one last
 * written, iot._broker_auth_files() returns the three files and the
 * generation they reflect, read in one statement (one snapshot), so a
 * change committed meanwhile is seen at the next poll.
 *
 * Files (in iot.bridge_config.auth_dir): passwd, acl (the password
 * listener), acl_certs (the certificate listener).  Each is written to
 * "<name>.tmp" (mode 0600), fsync'ed and renamed over the old one, so the
 * broker reads either the old or the new file, never half of one.  Then
 * the broker, whose pid is in broker_pid_file, gets SIGHUP, but only if
 * /proc/<pid>/comm says mosquitto (a wrong pid file must not signal
 * another process of the server's user) and the process already catches
 * SIGHUP (mosquitto writes its pid file before it installs its handlers,
 * and SIGHUP's default action would end it).  The outcome is recorded in
 * iot.bridge_counters (auth_generation, auth_applied_at, auth_error);
 * a failure is retried after IOT_AUTH_RETRY_MS (not every poll: each try
 * rewrites and fsyncs the files) and logged once per new message.
 *
 * Memory: file contents are copied into a private context, reset at each
 * write.  No secret is logged (the password file holds only hashes; the
 * bridge's own line is hashed in SQL).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "access/xact.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bv_iot.h"

static MemoryContext auth_cxt = NULL;
static int64 written_generation = -1;
static TimestampTz last_poll = 0;
static TimestampTz retry_at = 0; /* after a failure: not before (unless forced) */
static char last_error[256] = "";

/* Write a whole file atomically (tmp, fsync, rename); false + why on error. */
static bool
write_file(const char *dir, const char *name, const char *content, char *why, size_t whylen)
{
	char path[MAXPGPATH];
	char tmp[MAXPGPATH];
	size_t len = strlen(content);
	size_t done = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
	{
		snprintf(why, whylen, "cannot create %s: %m", tmp);
		return false;
	}
	while (done < len)
	{
		ssize_t w = write(fd, content + done, len - done);

		if (w <= 0)
		{
			snprintf(why, whylen, "cannot write %s: %m", tmp);
			close(fd);
			unlink(tmp);
			return false;
		}
		done += (size_t) w;
	}
	if (fsync(fd) != 0 || close(fd) != 0)
	{
		snprintf(why, whylen, "cannot fsync %s: %m", tmp);
		unlink(tmp);
		return false;
	}
	if (rename(tmp, path) != 0)
	{
		snprintf(why, whylen, "cannot rename %s to %s: %m", tmp, path);
		unlink(tmp);
		return false;
	}
	return true;
}

/* Does process pid catch SIGHUP (the SigCgt mask of /proc/<pid>/status)? */
static bool
catches_sighup(long pid)
{
	char path[64];
	char line[256];
	bool caught = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		if (strncmp(line, "SigCgt:", 7) == 0)
		{
			unsigned long long mask = strtoull(line + 7, NULL, 16);

			caught = (mask & (1ULL << (SIGHUP - 1))) != 0;
			break;
		}
	}
	fclose(f);
	return caught;
}

/* SIGHUP to the mosquitto whose pid is in pidfile; false + why on error. */
static bool
signal_broker(const char *pidfile, char *why, size_t whylen)
{
	char buf[64];
	char comm[64];
	char procpath[64];
	int fd;
	ssize_t n;
	long pid;
	char *end;

	fd = open(pidfile, O_RDONLY);
	if (fd < 0)
	{
		snprintf(why, whylen, "cannot open the broker's pid file %s: %m", pidfile);
		return false;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	pid = strtol(buf, &end, 10);
	if (n <= 0 || end == buf || pid <= 1 || pid > INT_MAX)
	{
		snprintf(why, whylen, "the broker's pid file %s holds no process id", pidfile);
		return false;
	}
	snprintf(procpath, sizeof(procpath), "/proc/%ld/comm", pid);
	fd = open(procpath, O_RDONLY);
	n = fd >= 0 ? read(fd, comm, sizeof(comm) - 1) : -1;
	if (fd >= 0)
		close(fd);
	comm[n > 0 ? n : 0] = '\0';
	if (strncmp(comm, "mosquitto", 9) != 0)
	{
		snprintf(why, whylen, "process %ld named in %s is not a running mosquitto", pid, pidfile);
		return false;
	}
	/*
	 * mosquitto writes its pid file and opens its listeners before it
	 * installs its signal handlers; SIGHUP in between would kill it.  Wait
	 * (until the next poll) until it catches SIGHUP.
	 */
	if (!catches_sighup(pid))
	{
		snprintf(why, whylen, "the broker (pid %ld) does not handle SIGHUP yet", pid);
		return false;
	}
	if (kill((pid_t) pid, SIGHUP) != 0)
	{
		snprintf(why, whylen, "cannot signal the broker (pid %ld): %m", pid);
		return false;
	}
	return true;
}

/* Record the outcome in iot.bridge_counters (SPI connected). */
static void
record(int64 generation, const char *error)
{
	Oid types[2] = {INT8OID, TEXTOID};
	Datum args[2] = {Int64GetDatum(generation), error ? CStringGetTextDatum(error) : (Datum) 0};
	char nulls[2] = {' ', error ? ' ' : 'n'};

	if (error)
		SPI_execute_with_args("UPDATE iot.bridge_counters SET auth_error = $2 WHERE $1 IS NOT NULL", 2, types,
							  args, nulls, false, 0);
	else
		SPI_execute_with_args("UPDATE iot.bridge_counters SET auth_generation = $1, auth_applied_at = now(), "
							  "auth_error = NULL",
							  2, types, args, nulls, false, 0);
}

/* Read the files and their generation; write them and signal if changed. */
static void
sync_files(const char *dir, const char *pidfile, const char *bridge_user, const char *bridge_password,
		   bool force)
{
	Oid types[2] = {TEXTOID, TEXTOID};
	Datum args[2];
	char nulls[2];
	char *files[3] = {NULL, NULL, NULL};
	static const char *const names[3] = {"passwd", "acl", "acl_certs"};
	int64 generation = -1;
	char why[512] = "";
	bool ok = true;
	int i;

	iot_begin_tx();
	if (SPI_execute("SELECT generation FROM iot.broker_auth_changes", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		generation = v ? pg_strtoint64(v) : -1;
	}
	if (generation < 0 || (!force && generation == written_generation))
	{
		iot_commit_tx();
		return;
	}
	args[0] = bridge_user ? CStringGetTextDatum(bridge_user) : (Datum) 0;
	args[1] = bridge_password ? CStringGetTextDatum(bridge_password) : (Datum) 0;
	nulls[0] = bridge_user ? ' ' : 'n';
	nulls[1] = bridge_password ? ' ' : 'n';
	if (SPI_execute_with_args("SELECT generation, passwd, acl, acl_certs FROM iot._broker_auth_files($1, $2)", 2,
							  types, args, nulls, false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		for (i = 0; i < 3; i++)
		{
			char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 2);

			files[i] = MemoryContextStrdup(auth_cxt, v ? v : "");
		}
		generation = pg_strtoint64(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	}
	else
	{
		ok = false;
		snprintf(why, sizeof(why), "iot._broker_auth_files() returned nothing");
	}
	for (i = 0; ok && i < 3; i++)
		ok = write_file(dir, names[i], files[i], why, sizeof(why));
	if (ok && pidfile != NULL && pidfile[0] != '\0')
		ok = signal_broker(pidfile, why, sizeof(why));
	record(generation, ok ? NULL : why);
	iot_commit_tx();
	MemoryContextReset(auth_cxt);

	retry_at = ok ? 0 : TimestampTzPlusMilliseconds(GetCurrentTimestamp(), IOT_AUTH_RETRY_MS);
	if (ok)
	{
		written_generation = generation;
		last_error[0] = '\0';
	}
	else if (strcmp(why, last_error) != 0)
	{
		strlcpy(last_error, why, sizeof(last_error));
		ereport(WARNING, (errmsg("bv_iot bridge could not update the broker's credentials: %s", why),
						  errhint("Check iot.bridge_config.auth_dir (writable by the server) and broker_pid_file "
								  "(the pid of the mosquitto that reads those files); the bridge tries again.")));
	}
}

/*
 * iot_auth_sync
 *		If the registry changed since the files were last written (or
 *		force), write them and signal the broker.  Outside any transaction;
 *		does nothing when auth_dir is not configured.  Polls at most every
 *		IOT_AUTH_POLL_MS unless force.  An error (say, the function missing
 *		in a half-upgraded database) is logged and retried later.
 */
void
iot_auth_sync(const char *dir, const char *pidfile, const char *bridge_user, const char *bridge_password,
			  bool force)
{
	MemoryContext old = CurrentMemoryContext;

	if (dir == NULL || dir[0] == '\0')
		return;
	if (!force && last_poll != 0 &&
		(!TimestampDifferenceExceeds(last_poll, GetCurrentTimestamp(), IOT_AUTH_POLL_MS) ||
		 GetCurrentTimestamp() < retry_at))
		return;
	last_poll = GetCurrentTimestamp();
	if (auth_cxt == NULL)
		auth_cxt = AllocSetContextCreate(TopMemoryContext, "bv_iot broker auth", ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(auth_cxt);
	PG_TRY();
	{
		sync_files(dir, pidfile, bridge_user, bridge_password, force);
	}
	PG_CATCH();
	{
		ErrorData *e;

		MemoryContextSwitchTo(old);
		e = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		if (strcmp(e->message, last_error) != 0)
		{
			strlcpy(last_error, e->message, sizeof(last_error));
			ereport(WARNING, (errmsg("bv_iot bridge could not read the broker's credentials: %s", e->message),
							  errhint("Check that bv_iot is up to date (ALTER EXTENSION bv_iot UPDATE); the bridge tries again.")));
		}
		FreeErrorData(e);
	}
	PG_END_TRY();
}

/* Forget what was written: the next call writes the files again. */
void
iot_auth_reset(void)
{
	written_generation = -1;
}
