"""The four panes of the console: Tasks, Jobs, Settings and Log."""
