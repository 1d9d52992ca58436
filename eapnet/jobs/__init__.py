"""The jobs a user runs end to end, above every library layer: the main job (compress, export, check parity,
report; :mod:`eapnet.jobs.qat`) and the accuracy-vs-budget sweep (:mod:`eapnet.jobs.sweep`)."""
