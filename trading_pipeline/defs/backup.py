"""The ``backup`` job: a verified backup of the home into TRADING_BACKUP_DIR, then retention
(TRADING_BACKUP_KEEP), on demand or on the ``backup_nightly`` schedule, OFF until switched on
(in the UI, or ``dagster schedule start``). The work is in ``trading_pipeline/backup/``.

The op holds the warehouse writers' pool, so a compaction (which deletes lake files) never
runs while the backup copies them; loads and order runs keep going (the copies are online).
"""

import dagster as dg

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS
from trading_pipeline.defs.run_logs import run_logging, with_run_logging
from trading_pipeline.settings import get_settings

JOB = "backup"


class BackupConfig(dg.Config):
    keep: int = 0  # 0: TRADING_BACKUP_KEEP


@dg.op(name="backup_home", pool=WAREHOUSE_WRITERS,
       description="Back up the ops store and the lake into TRADING_BACKUP_DIR, verify the backup's checksums, "
       "then delete nightly backups beyond TRADING_BACKUP_KEEP.")
def backup_home(context: dg.OpExecutionContext, config: BackupConfig) -> dict:
    from trading_pipeline import backup

    settings = get_settings()
    try:
        out = backup.nightly(settings, keep=config.keep or None, step=lambda what: context.log.debug(what))
    except backup.BackupError as exc:
        raise dg.Failure(description=f"backup failed: {exc}" + (f" ({exc.hint})" if exc.hint else "")) from exc
    logs.run_event(context.log, "backup", path=out["path"], bytes=out["bytes"], deleted=len(out["deleted"]),
                   **out["counts"])
    context.add_output_metadata({
        "path": dg.MetadataValue.path(out["path"]),
        "bytes": dg.MetadataValue.int(out["bytes"]),
        "counts": dg.MetadataValue.json(out["counts"]),
        "deleted": dg.MetadataValue.json(out["deleted"]),
    })
    return out


@dg.job(name=JOB, description="Back up the ops store and the lake (verified), keeping TRADING_BACKUP_KEEP backups.",
        config=run_logging())
def backup_job():
    backup_home()


@dg.schedule(job=backup_job, cron_schedule="15 2 * * *", execution_timezone="America/New_York",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="OFF by default. Every night at 02:15 New York time (before lake_maintenance at 03:30): "
             "a verified backup into TRADING_BACKUP_DIR, keeping TRADING_BACKUP_KEEP.")
def backup_nightly(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"backup-{day}", run_config=with_run_logging())
