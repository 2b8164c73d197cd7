"""The tasks: what an entry point runs, each a function of a composed config, one module per task.

- ``asyrp.tasks.train.train`` (train.py): train an h-function for one attribute;
- ``asyrp.tasks.edit.edit`` (edit.py): edit images, the request (``asyrp.tasks.edit_request``) built before any
  network loads, then the loop that runs it;
- ``asyrp.tasks.discover.discover`` (discover.py): find h-space directions (the finders are asyrp.directions);
- ``asyrp.tasks.serve.serve`` (app.py): the interactive editor's page (the view is asyrp.app);
- ``asyrp.tasks.edit_quality.edit_quality``: the objective of ``hparams_search=edit_quality`` (a trial judged by
  its edits).

The top of the library: the entry points, asyrp.experiment and experiments/ import the tasks; nothing below does.
This package imports none of its modules, so ``asyrp.tasks.edit`` names the module and the function is
``asyrp.tasks.edit.edit``.
"""
