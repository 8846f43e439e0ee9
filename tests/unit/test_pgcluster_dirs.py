"""Where a private PostgreSQL lives when the commands run as root (mailer dev's .mailer-dev)."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

from mailer import pgcluster


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_a_folder_postgres_can_reach_is_used_even_before_it_exists() -> None:
    checkout = pathlib.Path(tempfile.mkdtemp(prefix="mailer-checkout-"))
    try:
        checkout.chmod(0o755)  # as a checkout under /tmp or /home usually is
        preferred = checkout / ".mailer-dev" / "postgres"
        assert pgcluster.reachable_base_dir(preferred, "mailer-test-fallback") == preferred
    finally:
        shutil.rmtree(checkout)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_a_folder_postgres_cannot_reach_falls_back_to_tmp(tmp_path: pathlib.Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    preferred = private / ".mailer-dev" / "postgres"
    fallback = pathlib.Path("/tmp") / "mailer-test-fallback"  # noqa: S108  # what pgcluster falls back to
    assert pgcluster.reachable_base_dir(preferred, "mailer-test-fallback") == fallback
