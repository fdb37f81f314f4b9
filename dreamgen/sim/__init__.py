"""The "real world": simulators we collect demonstrations in and evaluate policies on."""
