"""`python -m fashion_tf.app --run-dir RUN`: check the run, then become `streamlit run page.py` with safe flags.

The server listens on --host (127.0.0.1 unless told otherwise), sends no usage statistics, watches no files,
shows no error details to the browser, and refuses uploads over --max-image-mb before they arrive.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from fashion_tf.app.options import AppOptions, parse_options
from fashion_tf.errors import UserError, run_cli

PAGE = Path(__file__).with_name("page.py")


def streamlit_command(options: AppOptions) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(PAGE),
        "--server.address", options.host,
        "--server.port", str(options.port),
        "--server.headless", "true",  # no browser opened, no e-mail prompt
        "--browser.gatherUsageStats", "false",
        "--server.maxUploadSize", str(options.upload_limit_mb),
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--global.developmentMode", "false",
        "--client.showErrorDetails", "none",  # a traceback is for the server's log, not for visitors
        "--client.toolbarMode", "viewer",
        "--theme.base", "light",
        "--", *options.page_argv(),
    ]


def check_run(options: AppOptions) -> None:
    """The run directory, read before the server starts, so a wrong path is one line and exit code 2."""
    from fashion_tf.run_folder import load_run

    load_run(options.run_dir)
    if options.data_dir is not None and not options.data_dir.is_dir():
        raise UserError(f"{options.data_dir}: shard folder not found (--data)")


def serve(options: AppOptions) -> None:
    """Check the run, then replace this process by the Streamlit server (it returns only on failure)."""
    check_run(options)
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise UserError("streamlit is not installed: pip install -e '.[app]'") from None
    print(f"fashion_tf.app: serving {options.run_dir} on http://{options.host}:{options.port}/ (Ctrl-C stops)",
          file=sys.stderr, flush=True)
    command = streamlit_command(options)
    os.execv(command[0], command)


def main(argv: Sequence[str] | None = None) -> int:
    serve(parse_options(argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
