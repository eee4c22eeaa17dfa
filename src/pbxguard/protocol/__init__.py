"""Sans-I/O wire codecs for the Asterisk Manager Interface and FastAGI."""
