"""The supervisorctl side: commands that run in the operator's supervisorctl."""
