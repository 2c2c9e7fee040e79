"""Running a Beam pipeline from our commands: the options after `--`, one-line errors, the work as a list of names.

Every distributed stage has the same shape: the driver plans work units (names), skips those done before, and
runs `Create(pending names) | Reshuffle | ParDo(do one unit)`; each unit writes its outputs idempotently and a
marker last, so a rerun of a killed or failed job redoes only unfinished units.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Callable, Sequence

from tqdm import tqdm

from fashion_tf.errors import UserError

BEAM_EXTRA = "pip install 'fashion_tf[beam]' (apache-beam[tfrecord])"


def split_engine_args(argv: Sequence[str] | None) -> tuple[list[str] | None, list[str]]:
    """(our arguments, Beam pipeline arguments): everything after the first `--` goes to Beam."""
    if argv is None:
        argv = sys.argv[1:]
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def import_beam():
    """apache_beam, imported without the warnings some of its optional modules log at import time (a user's error
    must stay one line)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        import apache_beam
    except ImportError:
        raise UserError(f"--engine beam needs Apache Beam: {BEAM_EXTRA}") from None
    finally:
        root.setLevel(level)
    return apache_beam


def pipeline_options(beam_args: Sequence[str]):
    """PipelineOptions from the arguments after `--`; Beam logs errors only, unless told otherwise."""
    import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    if not any(arg.startswith("--default_sdk_harness_log_level") for arg in args):
        args.append("--default_sdk_harness_log_level=ERROR")
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    return PipelineOptions(args)


def run_units(names: Sequence[str], do_unit, beam_args: Sequence[str], stage: str,
              progress: Callable[[], int] | None = None, total: int | None = None, unit: str = "img") -> None:
    """Run `do_unit` (a beam.DoFn taking a unit name) over `names` on the runner the options name.

    The pipeline runs in a thread while this one shows a progress bar of `progress()` (e.g. manifest rows so far)."""
    if not names:
        return
    beam = import_beam()
    options = pipeline_options(beam_args)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with beam.Pipeline(options=options) as pipeline:
                _ = (pipeline
                     | "units" >> beam.Create(list(names))
                     | "spread" >> beam.Reshuffle()
                     | stage >> beam.ParDo(do_unit))
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread below
            failure.append(err)

    thread = threading.Thread(target=run, name=f"beam-{stage}", daemon=True)
    thread.start()
    with tqdm(total=total, unit=unit, desc=stage, disable=progress is None or None, mininterval=1.0) as bar:
        while thread.is_alive():
            thread.join(timeout=1.0)
            if progress is not None:
                bar.update(progress() - bar.n)
    if failure:
        err = failure[0]
        if isinstance(err, UserError):
            raise err
        # a worker's failure or a runner's complaint: one line, and the rerun resumes
        raise UserError(f"the Beam {stage} pipeline failed ({type(err).__name__}: {_last_line(err)}); units that "
                        "finished are kept: re-run the same command to do the rest") from None


def _last_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[-1] if text else "")[:300]
