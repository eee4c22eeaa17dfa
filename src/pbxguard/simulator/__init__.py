"""A simulated PBX that speaks AMI, replaying recorded Asterisk sessions."""
