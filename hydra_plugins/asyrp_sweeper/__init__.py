"""Hydra accepts a sweeper only from a class defined under ``hydra_plugins``: this names asyrp's (the code is
asyrp/tasks/sweeper.py; conf/hydra/sweeper/study.yaml selects it)."""

from asyrp.tasks.sweeper import StudySweeper as _StudySweeper


class StudySweeper(_StudySweeper):
    """``asyrp.tasks.sweeper.StudySweeper``, where Hydra's plugin scan finds it."""
