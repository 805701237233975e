"""``tasklease db accept-restore``: go on with a database that went back in time.

A broker refuses to start on a database whose audit log does not extend the last
checkpoint its log key signed (``core.rollback``: a restore from a backup, a standby that
missed the last commits). This local command is the operator's explicit choice to go on
with it: for each such log (the default tenant's, each tenant's) it records the rollback
in the log, with both trees (sizes, roots), has a new log key sign from there, keeps a
checkpoint of the log as it is now as the anchor, and republishes the trust bundle with a
new sequence; then it says what the restore lost. See docs/operations.md, Backups.
"""

from __future__ import annotations

import base64
import getpass

import typer

from tasklease.cli._common import EXIT_USAGE, ConfigOpt, DataDirOpt, fail, out

__all__ = ["accept_restore", "register"]


LOST = (
    "Revocations and removals made after the backup are lost: the tokens they ended are "
    "valid again until they expire. Issue them again now (tasklease revoke --level ... "
    "--target ..., app remove, operator remove), and tell the witnesses' and auditors' "
    "operators about the new log key. Key retirements the key directory kept are recorded "
    "again when the broker starts (signing_key_retirements_restored)."
)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid
        user = "unknown"
    return f"the local command `tasklease db accept-restore` (user {user})"


def accept_restore(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Accept a database that went back in time, which the broker refuses to start on.

    Such a database was restored from a backup, or is missing its last commits.

    For each audit log that went back, records it in the log (audit_rollback_accepted,
    with both sizes and roots), rotates the log key, keeps a checkpoint of the log as it is
    as the new anchor, and publishes the trust bundle with a new sequence. Run it with the
    broker stopped, on the data directory (or configuration) the broker uses. Revocations
    made after the backup are lost: issue them again.
    """
    from tasklease.brokerstate import StateError
    from tasklease.core.errors import TaskleaseError
    from tasklease.core.kernel import RequestContext
    from tasklease.core.transparency import logs_went_back
    from tasklease.keystore import KeyStoreError
    from tasklease.server import build_broker
    from tasklease.settings import ConfigError, load_config
    from tasklease.tenancy import Tenancy

    try:
        cfg = load_config(config, overrides={"data_dir": data_dir})
    except ConfigError as exc:
        fail(str(exc))
    try:
        broker = build_broker(cfg, refuse_went_back=False)
    except StateError as exc:  # no broker here: serve's words
        fail(str(exc))
    except (KeyStoreError, TaskleaseError) as exc:
        fail(f"cannot open the broker's keys and database: {exc}", EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot open the broker's keys and database: {exc.strerror or exc}", EXIT_USAGE)
    tenancy = Tenancy(broker, refuse_went_back=False)
    try:
        anchors = broker.transparency.anchors
        try:
            found = logs_went_back(broker.store, anchors, cfg.key_dir) if anchors else []
        except (OSError, ValueError) as exc:
            fail(str(exc))
        if not found:
            out.print(
                "Nothing to accept: every audit log of the database extends the last "
                "checkpoint its log key signed.",
                highlight=False,
                markup=False,
            )
            return
        ctx = RequestContext()
        for item in found:
            try:
                tenant = (
                    broker if item.tenant == broker.store.tenant else tenancy.broker(item.tenant)
                )
                if tenant is None:  # removed meanwhile: it is not served
                    continue
                accepted = tenant.accept_restore(_who(), ctx)
            except (TaskleaseError, ValueError, OSError) as exc:
                fail(f"tenant {item.tenant}: the restore could not be accepted: {exc}")
            if accepted is None:  # another process accepted it meanwhile
                continue
            event = accepted.event
            out.print(
                f"Tenant {item.tenant}: the audit log went back from {item.anchor.size} events "
                f"(root {_b64(item.anchor.root)}) to {item.size} (root {_b64(item.root)}); "
                f"accepted, recorded as {event.id if event else 'an event'} "
                f"(audit_rollback_accepted). A new log key signs from here (the log "
                f"now holds {accepted.size}): {accepted.new_vkey}",
                highlight=False,
                markup=False,
            )
        out.print(LOST, highlight=False, markup=False)
    finally:
        tenancy.close()
        broker.audit.close()
        broker.store.close()


def register(db_app: typer.Typer) -> None:
    """Add ``accept-restore`` to the ``db`` command group."""
    db_app.command("accept-restore")(accept_restore)
