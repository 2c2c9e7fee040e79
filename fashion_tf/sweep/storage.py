"""The study's storage: an SQLAlchemy URL or an Optuna journal file, with heartbeats and retries of dead trials."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

from fashion_tf.errors import UserError, one_line


HEARTBEAT_ATTR = "fashion_tf:heartbeat"


def open_storage(spec: str, heartbeat: int, grace: Optional[int], max_retries: int):
    """An Optuna storage with a heartbeat: a trial whose process dies is failed after `grace` seconds without a beat,
    and its parameters are queued again (RetryHeartbeatStaleTrialCallback)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        if "://" not in spec:
            return _journal_storage(Path(spec), heartbeat, grace, retry)
        if spec.startswith("sqlite:///"):
            Path(spec[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite") else None  # wait out other writers
        try:
            return optuna.storages.RDBStorage(spec, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                              grace_period=grace, heartbeat_stale_trial_callback=retry)
        except ImportError:
            raise UserError(f"--storage {spec}: its database driver is not installed "
                            "(e.g. pip install psycopg2-binary for postgresql, pymysql for mysql+pymysql)") from None
        except Exception as err:  # noqa: BLE001 - SQLAlchemy's URL and connection errors are many classes
            raise UserError(f"--storage {spec}: cannot open ({type(err).__name__}: {one_line(err)})") from None


def _journal_storage(path: Path, heartbeat: int, grace: Optional[int], retry):
    from optuna.storages._heartbeat import BaseHeartbeat  # Optuna 5 gives only RDBStorage a heartbeat
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna.trial import TrialState

    class JournalStorageWithHeartbeat(JournalStorage, BaseHeartbeat):
        """Journal file storage whose heartbeat is a trial system attribute (wall-clock seconds): Optuna's
        optimize() beats it from a thread, and fail_stale_trials() fails a RUNNING trial with no beat for `grace`."""

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = trial.system_attrs.get(HEARTBEAT_ATTR)
                if beat is None and trial.datetime_start is not None:
                    beat = trial.datetime_start.timestamp()
                if beat is not None and now - beat > (grace or 2 * heartbeat):
                    stale.append(trial._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int:
            return heartbeat

        def get_heartbeat_stale_trial_callback(self):
            return retry

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return JournalStorageWithHeartbeat(JournalFileBackend(str(path)))
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file
        raise UserError(f"--storage {path}: not a readable Optuna journal ({type(err).__name__}: {one_line(err)})") from None
