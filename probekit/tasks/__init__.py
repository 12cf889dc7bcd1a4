"""Probing tasks: labels derived from Sentence records, per word or per sentence.

A task is a YAML file (in the project's ``tasks/`` folder, or a folder of your own listed in
``PROBEKIT_TASKS_PATH``) that names a registered label function. See ``tasks/README.md``.
"""
from probekit.tasks.base import Task, extra_task, get_task, list_tasks, register_label_fn

__all__ = ["Task", "extra_task", "get_task", "list_tasks", "register_label_fn"]
