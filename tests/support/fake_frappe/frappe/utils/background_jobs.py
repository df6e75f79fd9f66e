"""Fake ``frappe.utils.background_jobs``: ``execute_job`` with real Frappe's signature."""

import frappe


def execute_job(site, method, event, job_name, kwargs, user=None, is_async=True, retry=0):
    """Run ``method`` (a dotted path or a callable) with ``**kwargs``, like Frappe's job runner.

    Real Frappe also connects to ``site`` as ``user`` and commits; that part is out of scope here.
    """
    frappe.local.site = site
    frappe.local.user = user
    if isinstance(method, str):
        method = frappe.get_attr(method)
    return method(**kwargs)
