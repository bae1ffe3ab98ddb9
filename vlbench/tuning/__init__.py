"""The tuning ruleset: studies of a condenser's declared search space on val (studies.py), the settings they
chose and how a run reads them back (tuned.py)."""
