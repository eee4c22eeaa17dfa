"""The shell: the command line, the daemon, the demo (and the web console): parsing and showing."""
