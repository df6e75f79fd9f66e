"""Doubles of BTU's task runner entry points: each call is recorded as one JSON line in the file
named by ``$BTU_FAKE_RECORD``, so a test can see what an RQ worker called them with.

A task whose ID starts with ``FAIL`` raises, so the job fails and reaches the failure callback.
"""

import json
import os

RECORD_ENV_VAR = "BTU_FAKE_RECORD"


def _record(entry: dict) -> None:
    with open(os.environ[RECORD_ENV_VAR], "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def run_task_by_id(task_id, site_name, schedule_id, rq_job_id, **extra):
    """BTU 15.1.1+'s job entry point: records its arguments (and Frappe's site and user)."""
    import frappe

    _record({"call": "run_task_by_id", "task_id": task_id, "site_name": site_name,
             "schedule_id": schedule_id, "rq_job_id": rq_job_id, "extra": extra,
             "frappe_site": frappe.local.site, "frappe_user": frappe.local.user})
    if task_id.startswith("FAIL"):
        raise RuntimeError(f"task {task_id} failed on purpose")


def on_btu_task_failure(job, connection, exc_type, exc_value, traceback):
    """BTU's failure callback, as rq calls it: records the job and the error."""
    _record({"call": "on_btu_task_failure", "job_id": job.id, "error": str(exc_value),
             "error_type": exc_type.__name__})
