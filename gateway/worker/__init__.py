"""The gateway's one background worker: the loop (:mod:`.loop`), dispatch within quotas (:mod:`.dispatch`),
reconciliation after a crash (:mod:`.reconcile`), the tracking of active jobs (:mod:`.tracker`), what one cycle
reads from Slurm (:mod:`.observe`), the pure state decision (:mod:`.apply`) and the metrics files (:mod:`.metrics`)."""
