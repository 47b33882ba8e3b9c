-- pg_cron 1.4.2's launcher does not start jobs that extension scripts
-- scheduled while it was starting (seen with every job of the suite in the
-- cluster `make run` starts: no run at all until cron.job changed again).
-- cron.alter_job() makes it reload its job list; run once after the suite's
-- extensions are installed, by make run and every test cluster alike.
SELECT count(cron.alter_job(jobid, active => true)) AS jobs_reloaded FROM cron.job WHERE active;
