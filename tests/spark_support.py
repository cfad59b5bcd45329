"""Imported by the Spark tests before anything of Spark's: skips them where PySpark or Java is
missing (a user's machine may have neither), and fails instead under ``CI=true``, where
``.ci/run`` installs PySpark through the ``dev`` extra and the machines have Java 17."""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("pyspark")

if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("Java is missing under CI=true: Spark needs Java 17 (docs/spark.md)",
                    pytrace=False)
    pytest.skip("Spark needs Java 17 or later (docs/spark.md); none found", allow_module_level=True)
