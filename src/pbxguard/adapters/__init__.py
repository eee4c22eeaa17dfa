"""One module per outside system: AMI, FastAGI, ledger database, MQTT, files, clock."""
