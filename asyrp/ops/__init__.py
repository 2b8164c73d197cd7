"""The operational layer: what keeps a run safe and its messages precise (faults of the environment, run-folder
claims, locks, secrets, atomic writes, progress, the entry points' ``run_cli``). Nothing here is about diffusion.

Two floors (docs/contract.md, "The operational layer"): the leaves ``errors``, ``io``, ``progress``, ``locks``, ``guard``
hold no process-wide state and may be imported from anywhere in asyrp; ``faults``, ``cli``, ``claims``, ``secrets``,
``lightning`` and ``hydra_callbacks`` act on the process (signal handlers, what the run is doing, who owns a folder)
and are imported only by the entry points and the task layer. A core loop that must stop at a safe point, or say
what it is doing, is handed a guard by its task (``asyrp.ops.guard``) instead of importing ``faults``.
"""
